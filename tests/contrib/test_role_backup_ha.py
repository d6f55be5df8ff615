"""pgBackRest with Patroni: the repository host of ``swiftmail_backup``.

Rendered for an HA inventory (two Patroni members, a repository host, an
app host): each side's ``/etc/pgbackrest.conf``, Patroni's archive
settings, the firewall (pgBackRest's TLS port between the repository host
and the members only), and the structure of the certificate tasks (a key
made on its host and never copied, 0600; the authority's tasks on the
repository host, once; nothing made twice).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.contrib import role_files
from tests.contrib.role_files import ANSIBLE_DIR, ROLE_DIR, TEMPLATES_DIR, render
from tests.contrib.test_ansible_role import SAMPLE, task_named

HOSTVARS: dict[str, dict[str, Any]] = {
    "db1": {"ansible_host": "10.0.0.31"},
    "db2": {"ansible_host": "10.0.0.32"},
    "backup1": {"ansible_host": "10.0.0.35"},
    "app1": {"ansible_host": "10.0.0.11", "swiftmail_api_bind": "10.0.0.11:8000"},
}
GROUPS: dict[str, list[str]] = {
    "all": list(HOSTVARS),
    "swiftmail": ["app1"],
    "swiftmail_etcd": ["db1", "db2", "backup1"],
    "swiftmail_patroni": ["db1", "db2"],
    "swiftmail_backup": ["backup1"],
}
TLS_PORT = 8432


def on_host(host: str, groups: dict[str, list[str]] | None = None, **changes: Any) -> dict[str, Any]:
    """Return the variables a template sees on ``host`` of the HA inventory."""
    variables = {**SAMPLE, "groups": groups or GROUPS, "hostvars": HOSTVARS,
                 "inventory_hostname": host, **HOSTVARS[host],
                 "swiftmail_postgres_superuser_password": "pg-superuser-password",
                 "swiftmail_patroni_replication_password": "replication-password",
                 "swiftmail_patroni_restapi_password": "restapi-password",
                 "swiftmail_etcd_patroni_password": "etcd-patroni-password",
                 "swiftmail_firewall_cluster_networks": ["10.0.0.0/24"]}
    for part in ("api", "worker", "relay", "tracking", "tracking_web"):
        variables[f"swiftmail_{part}_enabled"] = host == "app1"
    return variables | changes


def settings(host: str, **changes: Any) -> list[tuple[str, str, str]]:
    """Render /etc/pgbackrest.conf for ``host``: (section, key, value), repeats kept."""
    text = render("pgbackrest-tls.conf.j2", on_host(host, **changes))
    entries, section = [], ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def values(entries: list[tuple[str, str, str]], section: str) -> dict[str, str]:
    return {key: value for where, key, value in entries if where == section}


# --- /etc/pgbackrest.conf ------------------------------------------------------------


def test_repository_host_backs_up_every_member_over_tls() -> None:
    entries = settings("backup1")
    stanza = values(entries, "swiftmail")
    for index, address in ((1, "10.0.0.31"), (2, "10.0.0.32")):
        assert stanza[f"pg{index}-host"] == address
        assert stanza[f"pg{index}-host-type"] == "tls"
        assert stanza[f"pg{index}-host-port"] == str(TLS_PORT)
        assert stanza[f"pg{index}-path"] == "/var/lib/postgresql/15/patroni"
        assert stanza[f"pg{index}-host-cert-file"] == "/etc/pgbackrest/tls/pgbackrest.crt"
        assert stanza[f"pg{index}-host-key-file"] == "/etc/pgbackrest/tls/pgbackrest.key"
        assert stanza[f"pg{index}-host-ca-file"] == "/etc/pgbackrest/tls/ca.crt"
    assert "pg3-host" not in stanza
    common = values(entries, "global")
    assert common["repo1-path"] == "/var/lib/pgbackrest"
    assert common["backup-standby"] == "n"
    assert "repo1-host" not in common
    assert common["tls-server-address"] == "10.0.0.35"
    # The members alone, each for the stanza only.
    auth = [value for section, key, value in entries if key == "tls-server-auth"]
    assert auth == ["db1=swiftmail", "db2=swiftmail"]
    assert values(settings("backup1", swiftmail_backup_standby=True), "global")[
        "backup-standby"] == "y"


def test_member_archives_to_the_repository_host_and_accepts_only_it() -> None:
    entries = settings("db1")
    common = values(entries, "global")
    assert common["repo1-host"] == "10.0.0.35"
    assert common["repo1-host-type"] == "tls"
    assert common["repo1-host-port"] == str(TLS_PORT)
    assert "repo1-path" not in common, "a member keeps no repository of its own"
    assert common["tls-server-address"] == "10.0.0.31"
    assert [value for _, key, value in entries if key == "tls-server-auth"] == [
        "backup1=swiftmail"]
    assert values(entries, "swiftmail") == {
        "pg1-path": "/var/lib/postgresql/15/patroni", "pg1-port": "5432"}


def test_repository_settings_such_as_s3_go_to_the_repository_host_only() -> None:
    s3 = {"repo1-type": "s3", "repo1-s3-bucket": "b"}
    assert values(settings("backup1", swiftmail_backup_repo_settings=s3), "global")[
        "repo1-type"] == "s3"
    assert "repo1-type" not in values(settings("db1", swiftmail_backup_repo_settings=s3),
                                      "global")


def test_the_files_pgbackrest_reads_are_the_ones_the_tasks_write() -> None:
    written = set()
    for task in role_files.tasks(ROLE_DIR / "tasks" / "backup_tls.yml"):
        text = json.dumps(task)
        written |= {name for name in ("ca.crt", "pgbackrest.crt", "pgbackrest.key")
                    if f"/{name}" in text or f"'{name}'" in text}
    assert written == {"ca.crt", "pgbackrest.crt", "pgbackrest.key"}
    for host in ("backup1", "db1"):
        paths = {value for _, key, value in settings(host) if key.endswith(("cert-file", "key-file", "ca-file"))}
        assert paths == {f"/etc/pgbackrest/tls/{name}" for name in written}


# --- Patroni ------------------------------------------------------------------------


def patroni_settings(**changes: Any) -> dict[str, Any]:
    """Render patroni.yml.j2 on db1 (with to_json, as Ansible); return it loaded."""
    environment = jinja2.Environment(  # noqa: S701 (YAML settings, not HTML)
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
        trim_blocks=True)
    environment.filters["to_json"] = json.dumps
    context = role_files.resolve({**role_files.defaults(), **on_host("db1", **changes)})
    return yaml.safe_load(environment.get_template("patroni.yml.j2").render(context))


def patroni_parameters(**changes: Any) -> dict[str, Any]:
    """Return the rendered postgresql.parameters (each member's own)."""
    return patroni_settings(**changes)["postgresql"]["parameters"]


def test_patroni_members_archive_through_pgbackrest_with_a_repository_host() -> None:
    parameters = patroni_parameters()
    assert parameters["archive_mode"] == "on"
    assert parameters["archive_command"] == "pgbackrest --stanza=swiftmail archive-push %p"
    assert parameters["archive_timeout"] == 60
    no_repository = {name: hosts for name, hosts in GROUPS.items() if name != "swiftmail_backup"}
    for parameters in (patroni_parameters(groups=no_repository),
                       patroni_parameters(swiftmail_backup_enabled=False)):
        assert "archive_command" not in parameters and "archive_mode" not in parameters


def cluster_parameters(**changes: Any) -> dict[str, Any]:
    """Return the rendered bootstrap.dcs.postgresql.parameters (the cluster's)."""
    return patroni_settings(**changes)["bootstrap"]["dcs"]["postgresql"]["parameters"]


def test_patroni_gets_the_import_settings_and_its_own_parameters_win() -> None:
    parameters = cluster_parameters(ansible_facts={"memtotal_mb": 8192})
    assert parameters["shared_buffers"] == "2048MB"
    assert (parameters["max_wal_size"], parameters["checkpoint_timeout"]) == ("8GB", "15min")
    mine = cluster_parameters(ansible_facts={"memtotal_mb": 8192},
                              swiftmail_patroni_parameters={"max_wal_size": "4GB",
                                                            "shared_buffers": "1GB"})
    assert (mine["max_wal_size"], mine["shared_buffers"]) == ("4GB", "1GB")


# --- Firewall -----------------------------------------------------------------------


def backup_rules(host: str, **changes: Any) -> list[str]:
    text = render("swiftmail-nftables.nft.j2", on_host(host, **changes))
    return [" ".join(line.split()) for line in text.splitlines() if str(TLS_PORT) in line]


def test_pgbackrest_port_is_open_between_the_repository_host_and_the_members_only() -> None:
    assert backup_rules("backup1") == [
        f"ip saddr {{ 10.0.0.31/32, 10.0.0.32/32 }} tcp dport {{ {TLS_PORT} }} accept comment "
        '"pgBackRest: repository host and Patroni members only"']
    for member in ("db1", "db2"):
        assert backup_rules(member) == [
            f"ip saddr {{ 10.0.0.35/32 }} tcp dport {{ {TLS_PORT} }} accept comment "
            '"pgBackRest: repository host and Patroni members only"']
    assert backup_rules("app1") == []
    # Not among the cluster ports either: app hosts are cluster members.
    assert backup_rules("db1", swiftmail_backup_enabled=False) == []
    no_repository = {name: hosts for name, hosts in GROUPS.items() if name != "swiftmail_backup"}
    assert backup_rules("db1", groups=no_repository) == []


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_rendered_repository_and_member_rulesets_pass_nft_check(tmp_path: Path) -> None:
    for host in ("backup1", "db1"):
        path = tmp_path / f"{host}.nft"
        path.write_text(render("swiftmail-nftables.nft.j2", on_host(host)))
        result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True,
                                text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr


# --- Certificates and keys ----------------------------------------------------------------


def test_the_authority_works_on_the_repository_host_once() -> None:
    for name in ("Create the certificate authority's directories (repository host)",
                 "Make the certificate authority (once, on the repository host)"):
        task = task_named("backup_tls.yml", name)
        assert task["delegate_to"] == "{{ swiftmail_backup_ca_host }}"
        assert task["run_once"] is True
    for name in ("Hand the request and its extensions to the certificate authority",
                 "Sign this host's certificate (certificate authority)",
                 "Read the signed certificate and the authority's"):
        assert task_named("backup_tls.yml", name)["delegate_to"] == (
            "{{ swiftmail_backup_ca_host }}")
    role_vars = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")
    assert "groups['swiftmail_backup']" in role_vars["swiftmail_backup_ca_host"]


def test_each_key_is_made_on_its_host_kept_0600_and_never_copied() -> None:
    tasks = role_files.tasks(ROLE_DIR / "tasks" / "backup_tls.yml")
    make = task_named("backup_tls.yml", "Make this host's key and certificate request")
    assert "delegate_to" not in make
    argv = make["ansible.builtin.command"]["argv"]
    assert argv[argv.index("-keyout") + 1] == "{{ swiftmail_backup_tls_dir }}/pgbackrest.key"
    assert argv[argv.index("-subj") + 1] == "/CN={{ inventory_hostname }}"
    mode = task_named("backup_tls.yml", "Give the key to pgBackRest alone (postgres, 0600)")
    assert mode["ansible.builtin.file"]["mode"] == "0600"
    assert mode["ansible.builtin.file"]["owner"] == "postgres"
    for task in tasks:
        if "pgbackrest.key" in json.dumps(task):
            assert set(task) & {"ansible.builtin.command", "ansible.builtin.file"}, task["name"]
    # The authority's key stays in its 0700 directory (openssl writes it 0600).
    assert "ca.key" not in json.dumps([t for t in tasks if "ansible.builtin.slurp" in t])
    directories = task_named("backup_tls.yml",
                             "Create the certificate authority's directories (repository host)")
    assert directories["ansible.builtin.file"]["mode"] == "0700"


def test_a_rerun_makes_and_signs_nothing() -> None:
    for task in role_files.tasks(ROLE_DIR / "tasks" / "backup_tls.yml"):
        command = task.get("ansible.builtin.command")
        if command is not None:
            assert "creates" in command, task["name"]
    sign = task_named("backup_tls.yml", "Sign this host's certificate (certificate authority)")
    assert sign["ansible.builtin.command"]["creates"] == "{{ swiftmail_backup_issued }}"
    issued = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")["swiftmail_backup_issued"]
    # A new key (request) or a new address (extensions) is a new file: signed again.
    assert "swiftmail_backup_csr.content" in issued
    assert "swiftmail_backup_cert_extensions" in issued
    assert "hash('sha1')" in issued


def test_certificates_name_the_host_and_its_address_for_pgbackrest() -> None:
    role_vars = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")
    extensions = role_vars["swiftmail_backup_cert_extensions"]
    assert "extendedKeyUsage=serverAuth,clientAuth" in extensions
    assert "subjectAltName={{ swiftmail_backup_cert_names }}" in extensions
    # pgBackRest 2.45 matches pgN-host/repo1-host (addresses) against DNS names only.
    assert role_vars["swiftmail_backup_cert_names"].startswith(
        "DNS:{{ inventory_hostname }},DNS:{{ swiftmail_address }}")


def test_a_new_certificate_or_settings_restart_the_pgbackrest_server() -> None:
    install = task_named("backup_tls.yml", "Install this host's certificate and the authority's")
    assert install["notify"] == "Restart the pgBackRest server"
    write = task_named("backup_server.yml", "Write /etc/pgbackrest.conf (repository host or Patroni member)")
    assert write["notify"] == "Restart the pgBackRest server"
    assert write["no_log"] is True
    handlers = {h["name"]: h for h in role_files.tasks(ROLE_DIR / "handlers" / "main.yml")}
    assert handlers["Restart the pgBackRest server"]["ansible.builtin.systemd_service"] == {
        "name": "pgbackrest", "state": "restarted"}


# --- Plays -----------------------------------------------------------------------------


def imports(entry: str) -> list[str]:
    return [task["ansible.builtin.import_tasks"]
            for task in role_files.tasks(ROLE_DIR / "tasks" / entry)]


def test_servers_before_patroni_then_stanza_and_timers_on_the_repository_host() -> None:
    plays = role_files.load_yaml(ANSIBLE_DIR / "site.yml")
    hosts = [play["hosts"] for play in plays]
    assert hosts.index("swiftmail_backup:swiftmail_patroni") < hosts.index("swiftmail_patroni") \
        < hosts.index("swiftmail_backup")
    assert imports("pgbackrest_host.yml") == ["firewall.yml", "backup_tls.yml", "backup_server.yml"]
    assert imports("pgbackrest_repository.yml") == ["backup_stanza.yml", "backup_timers.yml"]
    for entry in ("pgbackrest_host.yml", "pgbackrest_repository.yml"):
        for task in role_files.tasks(ROLE_DIR / "tasks" / entry):
            assert "swiftmail_backup_repository | bool" in task["when"], task["name"]


def test_a_plain_postgresql_host_keeps_its_own_repository() -> None:
    assert imports("postgres_host.yml") == [
        "firewall.yml", "postgres.yml", "backup_postgres.yml", "backup_stanza.yml",
        "backup_timers.yml"]
    text = render("pgbackrest.conf.j2", on_host("db1"))
    assert "repo1-path=/var/lib/pgbackrest" in text
    assert "tls" not in text


def test_patroni_hosts_without_a_repository_host_skip_pgbackrest(tmp_path: Path) -> None:
    """Regression: with no swiftmail_backup host the authority's tasks were skipped by
    their condition but their delegate_to ("") failed the play first."""
    from tests.contrib.test_ansible_playbook import run_playbook

    inventory = tmp_path / "inventory"
    inventory.write_text("[swiftmail_patroni]\ndb1 ansible_connection=local\n"
                         "db2 ansible_connection=local\n")
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "name": "pgBackRest servers without a repository host",
        "hosts": "swiftmail_patroni", "gather_facts": False,
        "tasks": [{"name": "pgBackRest host tasks", "ansible.builtin.import_role": {
            "name": "swiftmail", "tasks_from": "pgbackrest_host"}}],
    }]))
    result = run_playbook(play, tmp_path, "-i", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout and "failed=0" in result.stdout
