"""The role's cluster pieces: PostgreSQL, Redis, HAProxy, backups, firewall, upgrades.

Templates are rendered with plain Jinja2 for a split inventory (the groups
and host variables Ansible would pass) and, where the tool is installed,
checked by the real program: ``haproxy -c``, a ``redis-server`` started
with the rendered settings, the backup script run on temporary directories.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.contrib import role_files
from tests.contrib.role_files import ROLE_DIR, render
from tests.contrib.test_ansible_role import SAMPLE, parse_unit, task_named
from tests.ha.engines import free_port, wait_until_answering

# A split install as in inventory.example (addresses are the hosts' private ones).
HOSTVARS: dict[str, dict[str, Any]] = {
    "app1": {"ansible_host": "10.0.0.11", "swiftmail_api_bind": "10.0.0.11:8000"},
    "app2": {"ansible_host": "10.0.0.12", "swiftmail_api_bind": "10.0.0.12:8000"},
    "track1": {"ansible_host": "10.0.0.13", "swiftmail_tracking_web_bind": "10.0.0.13:8001"},
    "relay1": {"ansible_host": "10.0.0.21", "swiftmail_relay_intake_listen": "10.0.0.21:2526"},
    "db1": {"ansible_host": "10.0.0.31"},
    "cache1": {"ansible_host": "10.0.0.41"},
    "lb1": {"ansible_host": "10.0.0.5"},
}
GROUPS: dict[str, list[str]] = {
    "all": list(HOSTVARS),
    "swiftmail": ["app1", "app2", "track1", "relay1"],
    "swiftmail_api": ["app1", "app2"],
    "swiftmail_worker": ["app1", "app2"],
    "swiftmail_tracking": ["track1"],
    "swiftmail_relay": ["relay1"],
    "swiftmail_migrate": ["app1"],
    "swiftmail_postgres": ["db1"],
    "swiftmail_redis": ["cache1"],
    "swiftmail_haproxy": ["lb1"],
}


def on_host(host: str, **changes: Any) -> dict[str, Any]:
    """Return the variables a template sees on ``host`` of the split inventory."""
    variables = {**SAMPLE, "groups": GROUPS, "hostvars": HOSTVARS, "inventory_hostname": host,
                 **HOSTVARS[host], "swiftmail_postgres_superuser_password": "pg-superuser-pw",
                 "swiftmail_redis_password": 'redis"pass\\word-123'}
    # The role's defaults for the part flags evaluate the groups of this host.
    for part in ("api", "worker", "relay", "tracking"):
        variables[f"swiftmail_{part}_enabled"] = host in GROUPS[f"swiftmail_{part}"]
    variables["swiftmail_tracking_web_enabled"] = variables["swiftmail_tracking_enabled"]
    variables["swiftmail_migration_host"] = "app1"
    return variables | changes


# --- PostgreSQL -------------------------------------------------------------------


def hba_lines(**changes: Any) -> dict[str, list[str]]:
    """Render the pg_hba block; return its rule lines by the host comment above them."""
    text = render("pg_hba.conf.j2", on_host("db1", **changes))
    text = text.split("roles its processes use.\n")[1].split("# swiftmail_postgres_hba_extra")[0]
    rules: dict[str, list[str]] = {}
    host = ""
    for line in text.splitlines():
        if line.startswith("# "):
            host = line[2:].split()[0]
        elif line.strip():
            rules.setdefault(host, []).append(" ".join(line.split()))
    return rules


def test_pg_hba_lets_each_host_connect_only_as_the_roles_it_uses() -> None:
    rules = hba_lines()
    assert rules == {
        "app1": ["hostssl swiftmail swiftmail_owner,swiftmail_app,swiftmail_system "
                 "10.0.0.11/32 scram-sha-256",
                 "hostssl all postgres 10.0.0.11/32 scram-sha-256"],
        "app2": ["hostssl swiftmail swiftmail_app,swiftmail_system 10.0.0.12/32 scram-sha-256"],
        "track1": ["hostssl swiftmail swiftmail_system 10.0.0.13/32 scram-sha-256"],
        "relay1": ["hostssl swiftmail swiftmail_app,swiftmail_system 10.0.0.21/32 scram-sha-256"],
    }
    # PostgreSQL, Redis and HAProxy hosts are not SwiftMail hosts: no line at all.
    assert not {"db1", "cache1", "lb1"} & set(rules)


def test_pg_hba_without_tls_and_with_the_owner_everywhere() -> None:
    rules = hba_lines(swiftmail_postgres_require_ssl=False,
                      swiftmail_db_owner_password_everywhere=True,
                      swiftmail_database_url="postgresql://10.0.0.31:5432/mail?sslmode=require")
    assert rules["relay1"] == [
        "host mail swiftmail_owner,swiftmail_app,swiftmail_system 10.0.0.21/32 scram-sha-256"]


def test_pg_hba_keeps_debians_local_lines_first_then_the_operators_extra_lines() -> None:
    text = render("pg_hba.conf.j2", on_host("db1", swiftmail_postgres_hba_extra=[
        "hostssl replication replicator 10.0.0.32/32 scram-sha-256"]))
    rules = [" ".join(line.split()) for line in text.splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "local all postgres peer"
    assert rules[-1] == "hostssl replication replicator 10.0.0.32/32 scram-sha-256"
    assert "host all all 0.0.0.0/0 scram-sha-256" not in rules


def test_postgres_listens_on_its_private_address_and_archives_wal() -> None:
    text = render("postgresql-swiftmail.conf.j2", on_host("db1"))
    assert "listen_addresses = 'localhost,10.0.0.31'" in text
    assert "password_encryption = 'scram-sha-256'" in text
    assert "archive_mode = on" in text
    assert "archive_command = 'pgbackrest --stanza=swiftmail archive-push %p'" in text
    off = render("postgresql-swiftmail.conf.j2", on_host("db1", swiftmail_backup_enabled=False))
    assert "archive_command" not in off


def server_settings(text: str) -> dict[str, str]:
    """Return ``name = value`` lines of a rendered PostgreSQL settings file."""
    pairs = (line.split(" = ", 1) for line in text.splitlines()
             if " = " in line and not line.startswith("#"))
    return {name: value.strip("'") for name, value in pairs}


def test_postgres_is_sized_for_imports_and_every_setting_can_be_overridden() -> None:
    memory = {"ansible_facts": {"processor_vcpus": 2, "memtotal_mb": 16000}}
    settings = server_settings(render("postgresql-swiftmail.conf.j2", on_host("db1", **memory)))
    assert settings["shared_buffers"] == "4000MB", "a quarter of the host's memory"
    # An import of 1,000,000 contacts writes about 1.25 GB of WAL: no checkpoint mid-way.
    assert settings["max_wal_size"] == "8GB"
    assert settings["checkpoint_timeout"] == "15min"
    assert settings["checkpoint_completion_target"] == "0.9"
    assert server_settings(render("postgresql-swiftmail.conf.j2", on_host(
        "db1", ansible_facts={"memtotal_mb": 300})))["shared_buffers"] == "128MB"
    mine = server_settings(render("postgresql-swiftmail.conf.j2", on_host(
        "db1", **memory, swiftmail_postgres_settings={"max_wal_size": "2GB",
                                                       "shared_buffers": "1GB"})))
    assert (mine["max_wal_size"], mine["shared_buffers"]) == ("2GB", "1GB")
    text = render("postgresql-swiftmail.conf.j2", on_host(
        "db1", **memory, swiftmail_postgres_settings={"shared_buffers": "1GB"}))
    assert text.count("shared_buffers") == 1, "one line per setting"
    debian = server_settings(render("postgresql-swiftmail.conf.j2", on_host(
        "db1", swiftmail_postgres_tuning={}, swiftmail_postgres_shared_buffers="")))
    assert not {"shared_buffers", "max_wal_size", "checkpoint_timeout"} & set(debian)


def test_postgres_plays_read_the_memory_that_sizes_shared_buffers() -> None:
    for tasks_file in ("postgres.yml", "patroni.yml"):
        task = task_named(tasks_file, "Read the host's memory")
        assert task["ansible.builtin.setup"]["filter"] == ["ansible_memtotal_mb"]
        names = [entry["name"] for entry in role_files.tasks(ROLE_DIR / "tasks" / tasks_file)]
        template = next(name for name in names if "settings" in name.lower())
        assert names.index("Read the host's memory") < names.index(template)


def test_superuser_password_never_reaches_a_command_line() -> None:
    task = task_named("postgres.yml", "Set the superuser password")
    assert "password" not in " ".join(task["ansible.builtin.command"]["argv"]).lower()
    assert "\\getenv password SWIFTMAIL_NEW_PASSWORD" in task["ansible.builtin.command"]["stdin"]
    assert task["no_log"] is True
    check = task_named("postgres.yml", "Check the superuser password")
    assert check["environment"]["PGPASSWORD"] == "{{ swiftmail_postgres_superuser_password }}"
    assert task["when"] == "swiftmail_pg_password_check.rc != 0", "set only when it fails"


# --- Redis ---------------------------------------------------------------------------


def test_redis_binds_loopback_and_its_address_with_a_password() -> None:
    text = render("redis-swiftmail.conf.j2", on_host("cache1"))
    assert "bind 127.0.0.1 -::1 10.0.0.41" in text
    assert 'requirepass "redis\\"pass\\\\word-123"' in text
    assert "maxmemory-policy noeviction" in text


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_rendered_redis_settings_refuse_clients_without_the_password(tmp_path: Path) -> None:
    import redis

    config = tmp_path / "swiftmail.conf"
    config.write_text(render("redis-swiftmail.conf.j2",
                             on_host("cache1", swiftmail_address="127.0.0.2")))
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", str(config), "--port", str(port), "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        password = 'redis"pass\\word-123'
        client = redis.Redis(port=port, password=password, socket_timeout=5)
        wait_until_answering(client, server, "redis-server")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- HAProxy ---------------------------------------------------------------------------


def test_haproxy_terminates_tls_and_checks_readyz_on_every_api_host() -> None:
    text = render("haproxy.cfg.j2", on_host("lb1"))
    assert "bind *:443 ssl crt /etc/haproxy/certs/swiftmail.pem" in text
    assert "http-request redirect scheme https" in text
    assert "option httpchk GET /readyz" in text
    api = text.split("\nbackend swiftmail-api", 1)[1].split("\nbackend ", 1)[0]
    servers = [" ".join(line.split()) for line in api.splitlines()
               if line.strip().startswith("server ")]
    assert servers == ["server app1 10.0.0.11:8000 check", "server app2 10.0.0.12:8000 check"]


def test_haproxy_routes_tracking_hits_to_the_hot_path_with_the_api_as_fallback() -> None:
    text = render("haproxy.cfg.j2", on_host("lb1"))
    https = text.split("frontend swiftmail-https", 1)[1].split("\nbackend ", 1)[0]
    assert ("use_backend swiftmail-tracking if { path_beg /t/ } "
            "{ nbsrv(swiftmail-tracking) gt 0 }") in https
    assert https.index("use_backend swiftmail-tracking") < https.index("default_backend")
    tracking = text.split("\nbackend swiftmail-tracking", 1)[1]
    servers = [" ".join(line.split()) for line in tracking.splitlines()
               if line.strip().startswith("server ")]
    assert servers == ["server track1 10.0.0.13:8001 check"]


def test_haproxy_keeps_metrics_from_the_world() -> None:
    # Regression: HAProxy passed /metrics on to the API, so the world read it.
    text = render("haproxy.cfg.j2", on_host("lb1"))
    assert "http-request deny deny_status 404 if { path,url_dec -m reg ^/+metrics(/|$) }" in text


@pytest.mark.skipif(not shutil.which("haproxy") or not shutil.which("openssl"),
                    reason="haproxy or openssl not installed")
def test_rendered_haproxy_configuration_passes_haproxy_check(tmp_path: Path) -> None:
    certificate = tmp_path / "swiftmail.pem"
    # As the role makes it: the key beside the certificate, in "<certificate>.key".
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=mail.example.com", "-keyout", f"{certificate}.key",
         "-out", str(certificate)],
        check=True, capture_output=True, timeout=60)
    config = tmp_path / "haproxy.cfg"
    text = render("haproxy.cfg.j2", on_host(
        "lb1", swiftmail_haproxy_certificate_path=str(certificate)))
    config.write_text(text.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_certificate_and_configuration_changes_reload_haproxy_never_restart() -> None:
    handler = next(h for h in role_files.tasks(ROLE_DIR / "handlers" / "main.yml")
                   if h["name"] == "Reload HAProxy")
    assert handler["ansible.builtin.systemd_service"]["state"] == "reloaded"
    for name in ("Copy the operator's certificate (certificate chain and key, PEM)",
                 "Make a self-signed certificate when none is given"):
        assert task_named("haproxy.yml", name)["notify"] == [
            "Reload HAProxy", "Record the HAProxy certificate expiry"], name
    assert task_named("haproxy.yml", "Write the HAProxy configuration")["notify"] == \
        "Reload HAProxy"
    warning = task_named("haproxy.yml", "Warn that the certificate is self-signed")
    assert "WARNING" in warning["ansible.builtin.debug"]["msg"]
    assert "haproxy -c -f %s" == task_named(
        "haproxy.yml", "Write the HAProxy configuration")["ansible.builtin.template"]["validate"]


def test_api_drains_behind_haproxy() -> None:
    units = parse_unit(render("swiftmail-api.service.j2", on_host(
        "app1", swiftmail_api_drain_seconds=6)))
    (start,) = [v for k, v in units["Service"] if k == "ExecStart"]
    assert start.endswith("--drain-seconds 6")
    defaults = role_files.defaults()
    assert "swiftmail_haproxy" in defaults["swiftmail_api_drain_seconds"]


# --- Backups ---------------------------------------------------------------------------


def test_pgbackrest_configuration_names_the_stanza_and_data_directory() -> None:
    text = render("pgbackrest.conf.j2", on_host(
        "db1", swiftmail_backup_repo_settings={"repo1-type": "s3", "repo1-s3-bucket": "b"}))
    assert "repo1-path=/var/lib/pgbackrest" in text
    assert "repo1-type=s3" in text and "repo1-s3-bucket=b" in text
    assert "[swiftmail]\npg1-path=/var/lib/postgresql/15/main\npg1-port=5432" in text


def test_full_and_differential_backups_run_from_timers() -> None:
    service = parse_unit(render("swiftmail-pgbackrest@.service.j2", on_host("db1")))
    assert ("ExecStart", "/usr/bin/pgbackrest --stanza=swiftmail --type=%i backup") in \
        service["Service"]
    assert ("User", "postgres") in service["Service"]
    for kind, when in (("full", "Sun *-*-* 01:30:00"), ("diff", "Mon..Sat *-*-* 01:30:00")):
        timer = parse_unit(render(f"swiftmail-pgbackrest-{kind}.timer.j2", on_host("db1")))
        assert ("OnCalendar", when) in timer["Timer"]
        assert ("Unit", f"swiftmail-pgbackrest@{kind}.service") in timer["Timer"]


def run_backup_script(tmp_path: Path, relay: bool, keep: int = 2) -> Path:
    """Render the file backup script for temporary directories and run it once."""
    config, spool, backups = tmp_path / "etc", tmp_path / "spool", tmp_path / "backups"
    for directory in (config, spool / "tmp", spool / "queue", spool / "free", backups):
        directory.mkdir(parents=True, exist_ok=True)
    (config / "swiftmail.toml").write_text('secret_key = "k"\n')
    (spool / "queue" / "m1").write_text("queued mail")
    (spool / "tmp" / "being-written").write_text("partial")
    (spool / "free" / "delivered").write_text("a delivered message's file kept for reuse")
    script = tmp_path / "swiftmail-backup-files"
    script.write_text(render("swiftmail-backup-files.sh.j2", on_host(
        "relay1" if relay else "app1", swiftmail_config_dir=str(config),
        swiftmail_spool_dir=str(spool), swiftmail_backup_files_dir=str(backups),
        swiftmail_backup_files_keep=keep)))
    script.chmod(0o755)
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return backups


def test_backup_script_archives_settings_and_spool_without_tmp_or_free(tmp_path: Path) -> None:
    backups = run_backup_script(tmp_path, relay=True)
    (archive,) = backups.glob("swiftmail-*.tar.gz")
    assert archive.stat().st_mode & 0o077 == 0, "the archive holds the secret key: root only"
    with tarfile.open(archive) as tar:
        names = {name.lstrip("/") for name in tar.getnames()}
    root = str(tmp_path).lstrip("/")
    assert f"{root}/etc/swiftmail.toml" in names
    assert f"{root}/spool/queue/m1" in names
    assert f"{root}/spool/tmp/being-written" not in names
    assert f"{root}/spool/free/delivered" not in names


def test_backup_script_keeps_the_newest_archives_and_no_spool_off_relays(
    tmp_path: Path
) -> None:
    for _ in range(3):
        backups = run_backup_script(tmp_path, relay=False, keep=2)
        time.sleep(1.1)  # archive names carry the second
    archives = sorted(backups.glob("swiftmail-*.tar.gz"))
    assert len(archives) == 2
    with tarfile.open(archives[-1]) as tar:
        assert not any("/spool" in name for name in tar.getnames())


# --- Firewall -----------------------------------------------------------------------


def ruleset(host: str, **changes: Any) -> str:
    return render("swiftmail-nftables.nft.j2", on_host(
        host, swiftmail_firewall_cluster_networks=["10.0.0.0/24"],
        swiftmail_firewall_monitoring_networks=["10.0.9.0/24"], **changes))


def test_service_hosts_open_their_port_to_the_cluster_only() -> None:
    postgres, redis_host, balancer = ruleset("db1"), ruleset("cache1"), ruleset("lb1")
    assert 'ip saddr { 10.0.0.0/24 } tcp dport { 5432 } accept comment "cluster members only"' \
        in postgres
    assert 'ip saddr { 10.0.0.0/24 } tcp dport { 6379 } accept comment "cluster members only"' \
        in redis_host
    assert 'tcp dport { 80, 443 } accept comment "served to the world"' in balancer
    for text in (postgres, redis_host):
        assert "served to the world" not in text
    # Not SwiftMail hosts: none of the SwiftMail ports (25, 587, API, intake).
    assert "2526" not in postgres and "8000" not in postgres and " 25," not in postgres
    assert "8001" not in postgres


def test_tracking_host_opens_its_hot_path_to_the_cluster_only() -> None:
    tracking, app = ruleset("track1"), ruleset("app1")
    assert 'ip saddr { 10.0.0.0/24 } tcp dport { 8001 } accept comment "cluster members only"' \
        in tracking
    assert "8001" not in app


# --- Rolling upgrade ------------------------------------------------------------------


def test_services_are_checked_after_the_restarts() -> None:
    main = role_files.tasks(ROLE_DIR / "tasks" / "main.yml")
    names = [task["name"] for task in main]
    assert names.index("Check that the services run and the API is ready") == \
        names.index("Restart the services whose code, settings or unit changed") + 1
    steady = task_named("verify.yml",
                        "Require every enabled service running, not restarting in a loop")
    assert "'ActiveState=active' in item.0.stdout_lines" in steady["ansible.builtin.assert"]["that"]
    ready = task_named("verify.yml", "Wait for the API to be ready")
    assert ready["ansible.builtin.uri"]["url"].endswith("/readyz")
    assert int(role_files.defaults()["swiftmail_verify_seconds"]) > 5, "longer than RestartSec"


# --- The same templates through the real Ansible ---------------------------------------

CLUSTER_TEMPLATES = {
    "db1": ["pg_hba.conf", "postgresql-swiftmail.conf", "swiftmail-nftables.nft"],
    "cache1": ["redis-swiftmail.conf", "swiftmail-nftables.nft"],
    "lb1": ["haproxy.cfg", "swiftmail-nftables.nft"],
    "relay1": ["swiftmail-nftables.nft", "swiftmail.toml"],
    "track1": ["swiftmail.toml"],
}


def test_ansible_renders_the_cluster_templates_like_plain_jinja(tmp_path: Path) -> None:
    # Regression: flags compared a macro's output with 'True', which Ansible 2.19
    # turns into a boolean: the firewall of a relay host opened neither 25 nor 587.
    import yaml

    from tests.contrib.test_ansible_playbook import run_playbook

    pytest.importorskip("ansible", reason="ansible-core is not installed")
    lines = []
    for group, hosts in GROUPS.items():
        if group in ("all", "swiftmail"):
            continue
        lines.append(f"[{group}]")
        lines += [f"{host} " + " ".join(f"{k}={v}" for k, v in HOSTVARS[host].items())
                  for host in hosts]
    lines += ["[swiftmail:children]", "swiftmail_api", "swiftmail_worker", "swiftmail_tracking",
              "swiftmail_relay"]
    (tmp_path / "inventory").write_text("\n".join(lines) + "\n")
    secrets = {k: v for k, v in on_host("db1").items()
               if k.startswith("swiftmail_") and k not in HOSTVARS["db1"]
               and not k.endswith("_enabled") and k != "swiftmail_migration_host"}
    secrets |= {"swiftmail_firewall_cluster_networks": ["10.0.0.0/24"],
                "swiftmail_firewall_monitoring_networks": ["10.0.9.0/24"]}
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(secrets))
    import sys
    play = [{
        "name": "Render", "hosts": ",".join(CLUSTER_TEMPLATES), "connection": "local",
        "gather_facts": False, "vars_files": [str(tmp_path / "vars.yml")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Role variables", "ansible.builtin.include_role": {
                "name": "swiftmail", "tasks_from": "relays", "public": True}},
            {"name": "Render", "ansible.builtin.template": {
                "src": f"{ROLE_DIR}/templates/{{{{ item }}}}.j2",
                "dest": f"{tmp_path}/out/{{{{ inventory_hostname }}}}-{{{{ item }}}}",
                "mode": "0600"},
             "loop": "{{ templates[inventory_hostname] }}"},
        ],
    }]
    play[0]["vars"]["templates"] = CLUSTER_TEMPLATES
    (tmp_path / "out").mkdir()
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(tmp_path / "play.yml", tmp_path, "-i", str(tmp_path / "inventory"))
    assert result.returncode == 0, result.stdout + result.stderr
    for host, templates in CLUSTER_TEMPLATES.items():
        for name in templates:
            expected = render(f"{name}.j2", on_host(host, **secrets) | {
                "swiftmail_runs_migrations": host == "app1",
                "swiftmail_relay_intakes": ["10.0.0.21:2526"]})
            assert (tmp_path / "out" / f"{host}-{name}").read_text() == expected, (host, name)
    relay_rules = (tmp_path / "out" / "relay1-swiftmail-nftables.nft").read_text()
    assert 'tcp dport { 25, 587 } accept comment "served to the world"' in relay_rules


# --- The relay's certificate ----------------------------------------------------------


def test_a_renewed_relay_certificate_reloads_the_relay(tmp_path: Path) -> None:
    from swiftmail_relay.config import RelayConfig

    from swiftmail_core.settings import load_settings

    settings_file = tmp_path / "swiftmail.toml"
    settings_file.write_text(render("swiftmail.toml.j2", on_host(
        "relay1", swiftmail_runs_migrations=False,
        swiftmail_relay_tls_certificate="files/mx1.crt", swiftmail_relay_tls_key="files/mx1.key")))
    relay = RelayConfig.from_settings(load_settings(settings_file, environ={}))
    assert (relay.tls_cert, relay.tls_key) == ("/etc/swiftmail/tls/relay.crt",
                                               "/etc/swiftmail/tls/relay.key")
    copy = task_named("config.yml", "Copy the relay's certificate and key")
    assert copy["notify"] == "Reload swiftmail-relay"
    handler = next(h for h in role_files.tasks(ROLE_DIR / "handlers" / "main.yml")
                   if h["name"] == "Reload swiftmail-relay")
    assert handler["ansible.builtin.systemd_service"]["state"] == "reloaded"
    unit = parse_unit(render("swiftmail-relay.service.j2", on_host("relay1")))
    assert ("ExecReload", "/bin/kill -HUP $MAINPID") in unit["Service"]


def _relay_tls(tmp_path: Path, host: str, **changes: Any) -> tuple[str, str]:
    """Return the relay's (tls_cert, tls_key) as the role writes them on ``host``."""
    from swiftmail_relay.config import RelayConfig

    from swiftmail_core.settings import load_settings

    settings_file = tmp_path / f"{host}-{len(list(tmp_path.iterdir()))}.toml"
    settings_file.write_text(render("swiftmail.toml.j2", on_host(
        host, swiftmail_runs_migrations=False, **changes)))
    relay = RelayConfig.from_settings(load_settings(settings_file, environ={}))
    return relay.tls_cert, relay.tls_key


def test_a_relay_without_an_operator_certificate_gets_a_self_signed_one(tmp_path: Path) -> None:
    # Regression: with no certificate given the role made none and said nothing: the
    # relay offered no STARTTLS on 25/587.
    generated = ("/etc/swiftmail/tls/relay.crt", "/etc/swiftmail/tls/relay.key")
    assert _relay_tls(tmp_path, "relay1") == generated
    assert _relay_tls(tmp_path, "app1") == ("", ""), "no relay there: no certificate"
    assert _relay_tls(tmp_path, "relay1", swiftmail_relay_tls_self_signed=False) == ("", "")
    own = {**SAMPLE["swiftmail_relay_settings"], "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem"}
    assert _relay_tls(tmp_path, "relay1", swiftmail_relay_settings=own) == ("/etc/c.pem", "/etc/k.pem")
    make = task_named("config.yml",
                      "Make a self-signed certificate for the relay's STARTTLS when none is given")
    command = make["ansible.builtin.command"]
    assert command["creates"] == "{{ swiftmail_config_dir }}/tls/relay.crt", "made once"
    assert command["argv"][-1] == command["creates"]
    assert make["when"] == "swiftmail_relay_tls_generate | bool"
    assert make["notify"] == "Reload swiftmail-relay"
    readable = task_named("config.yml", "Let the relay read its self-signed certificate and key")
    assert readable["ansible.builtin.file"]["mode"] == "0640"
    warning = task_named("config.yml", "Warn that the relay's certificate is self-signed")
    assert "WARNING" in warning["ansible.builtin.debug"]["msg"]
    assert warning["when"] == make["when"]
    generate = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")["swiftmail_relay_tls_generate"]
    for condition in ("swiftmail_relay_enabled | bool", "swiftmail_relay_tls_self_signed | bool",
                      "swiftmail_relay_tls_certificate | length == 0",
                      "'tls_cert' not in swiftmail_relay_settings"):
        assert condition in generate, condition
