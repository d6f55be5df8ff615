"""The Ansible role in contrib/ansible: structure, variables and templates.

Templates are rendered with plain Jinja2 (defaults plus sample variables) and
the result is read by SwiftMail's own settings loader, so a key SwiftMail does
not know, or a value that is not valid TOML, fails here.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from swiftmail_relay.config import RelayConfig

from swiftmail_core.settings import SETTING_FIELDS, load_settings, read_config_file
from tests.contrib import role_files
from tests.contrib.role_files import ANSIBLE_DIR, ROLE_DIR, UNITS, render

# Awkward values on purpose: quotes, backslashes, a single quote, '%'.
SECRET_KEY = 'k3y"with\\quotes-' + "x" * 24
SAMPLE: dict[str, Any] = {
    "swiftmail_secret_key": SECRET_KEY,
    "swiftmail_db_owner_password": "owner'pass\\word",
    "swiftmail_db_app_password": 'app"pass%',
    "swiftmail_db_system_password": "system-pass",
    "swiftmail_database_url": "postgresql://db.internal:5432/swiftmail",
    "swiftmail_database_admin_url": "postgresql://postgres:adm%21n@db.internal/postgres",
    "swiftmail_redis_url": "redis://cache.internal:6379/2",
    "swiftmail_public_url": "https://mail.example.com",
    "swiftmail_storage_dir": "/srv/swiftmail-storage",
    "swiftmail_load_plugins": ["web", "relay", "example"],
    "swiftmail_dns_nameservers": ["127.0.0.1", "::1"],
    "swiftmail_dns_port": 5353,
    "swiftmail_relay_settings": {
        "hostname": "mx1.example.com",
        "bounce_listen": "0.0.0.0:25",
        "dkim_ed25519": False,
        "workers": 8,
        "allow_networks": ["10.0.0.0/8", "192.168.0.0/16"],
    },
    "swiftmail_relay_bind_privileged_ports": True,
    "swiftmail_plugin_settings": {"example": {"greeting": "hi", "retries": 3}},
    "ansible_facts": {"processor_vcpus": 2},
}
MINIMAL: dict[str, Any] = {
    name: SAMPLE[name]
    for name in (*role_files.REQUIRED_SECRETS, *role_files.REQUIRED_PLAIN, "ansible_facts")
}
TASK_KEYWORDS = {
    "name", "when", "register", "notify", "loop", "loop_control", "become", "become_user",
    "environment", "changed_when", "failed_when", "run_once", "tags", "no_log", "check_mode",
    "listen", "vars", "ignore_errors", "until", "retries", "delay", "delegate_to", "timeout",
}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Split a systemd unit into sections of (key, value) pairs."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def service(unit: str, variables: dict[str, Any]) -> list[tuple[str, str]]:
    """Render a unit and return its [Service] entries."""
    return parse_unit(render(f"{unit}.service.j2", variables))["Service"]


# --- files and structure --------------------------------------------------------


@pytest.mark.parametrize(
    "path", role_files.yaml_files(), ids=lambda p: str(p.relative_to(ANSIBLE_DIR))
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert role_files.load_yaml(path) is not None


def test_the_role_and_example_files_exist() -> None:
    for relative in (
        "defaults/main.yml", "tasks/main.yml", "handlers/main.yml", "meta/main.yml",
        "templates/swiftmail.toml.j2",
        *(f"templates/{unit}.service.j2" for unit in UNITS),
    ):
        assert (ROLE_DIR / relative).is_file(), relative
    for relative in ("site.yml", "inventory.example", "inventory.single.example", "README.md",
                     "ansible.cfg"):
        assert (ANSIBLE_DIR / relative).is_file(), relative


def test_end_to_end_script_is_valid_shell() -> None:
    script = ANSIBLE_DIR / "tests" / "nspawn-e2e.sh"
    assert script.stat().st_mode & 0o111, "not executable"
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


# Entry points site.yml names with tasks_from, besides main.yml.
HOST_ENTRY_FILES = ("postgres_host.yml", "redis_host.yml", "haproxy_host.yml", "etcd_host.yml",
                    "patroni_host.yml", "sentinel_host.yml", "pgbackrest_host.yml",
                    "pgbackrest_repository.yml")


def imported_task_files(entry: str) -> list[str]:
    """Return the task files one entry file imports, in order."""
    return [task["ansible.builtin.import_tasks"]
            for task in role_files.tasks(ROLE_DIR / "tasks" / entry)
            if "ansible.builtin.import_tasks" in task]


def test_main_and_the_host_entry_files_import_every_task_file() -> None:
    imported = imported_task_files("main.yml")
    assert imported[0] == "preflight.yml", "variables are checked before anything changes"
    for entry in HOST_ENTRY_FILES:
        imported += imported_task_files(entry)
    present = sorted(p.name for p in (ROLE_DIR / "tasks").glob("*.yml")
                     if p.name not in ("main.yml", *HOST_ENTRY_FILES))
    assert sorted(set(imported)) == present


@pytest.mark.parametrize(
    "path",
    [*sorted((ROLE_DIR / "tasks").glob("*.yml")), ROLE_DIR / "handlers" / "main.yml"],
    ids=lambda p: p.name,
)
def test_every_task_is_named_and_uses_one_builtin_module(path: Path) -> None:
    for task in role_files.tasks(path):
        assert task.get("name"), f"unnamed task in {path.name}: {task}"
        modules = set(task) - TASK_KEYWORDS
        assert len(modules) == 1, f"{task['name']}: {modules}"
        assert modules.pop().startswith("ansible.builtin."), task["name"]


def restart_handlers() -> list[dict[str, Any]]:
    """Return the handlers that restart a SwiftMail service."""
    return [h for h in role_files.tasks(ROLE_DIR / "handlers" / "main.yml")
            if "ansible.builtin.systemd_service" in h
            and h["ansible.builtin.systemd_service"]["name"].startswith("swiftmail-")
            and h["ansible.builtin.systemd_service"]["state"] == "restarted"]


def test_handlers_restart_each_service_on_one_topic() -> None:
    handlers = restart_handlers()
    restarted = {h["ansible.builtin.systemd_service"]["name"] for h in handlers}
    assert restarted == set(UNITS)
    assert {h["name"] for h in handlers} == {f"Restart {unit}" for unit in UNITS}
    assert {h["listen"] for h in handlers} == {"Restart swiftmail"}
    assert all(h["ansible.builtin.systemd_service"]["state"] == "restarted" for h in handlers)


def test_code_and_config_restart_all_but_a_unit_only_its_service() -> None:
    # Regression: a change to one unit restarted all four services.
    notified = {
        task["name"]: task.get("notify")
        for path in (ROLE_DIR / "tasks").glob("*.yml")
        for task in role_files.tasks(path)
    }
    assert notified["Install SwiftMail"] == "Restart swiftmail"
    assert notified["Write swiftmail.toml"] == "Restart swiftmail"
    for unit in UNITS:
        assert notified[f"Install the {unit} unit"] == f"Restart {unit}"
    assert not [name for name, notify in notified.items()
                if isinstance(notify, str) and "{{" in notify], "a looped notify hits every handler"


def test_handlers_restart_only_services_running_before_the_play() -> None:
    # Regression: on first install every service was started, then restarted at once.
    handlers = restart_handlers()
    for handler in handlers:
        unit = handler["ansible.builtin.systemd_service"]["name"]
        assert f"swiftmail_was_running['{unit}'] | default(false) | bool" in handler["when"]
    names = [t["name"] for t in role_files.tasks(ROLE_DIR / "tasks" / "services.yml")]
    assert names.index("Read which services are running") < names.index(
        "Remember which SwiftMail services were running") < names.index(
        "Enable and start, or stop and disable, each service")
    remember = task_named("services.yml", "Remember which SwiftMail services were running")
    environment = jinja2.Environment()  # noqa: S701 (expressions, not HTML)
    services = {"swiftmail-api.service": {"state": "running"},
                "swiftmail-relay.service": {"state": "stopped"}}
    values = {
        unit: environment.from_string(template).render(
            _swiftmail_services=services)
        for unit, template in remember["ansible.builtin.set_fact"]["swiftmail_was_running"].items()
    }
    assert values == {"swiftmail-api": "True", "swiftmail-worker": "False",
                      "swiftmail-relay": "False", "swiftmail-tracking": "False",
                      "swiftmail-tracking-web": "False"}


def test_doctor_runs_after_new_services_start_and_before_restarts() -> None:
    # Regression: doctor ran after every service had been restarted.
    steps = role_files.tasks(ROLE_DIR / "tasks" / "main.yml")
    order = [step.get("ansible.builtin.import_tasks") or step.get("ansible.builtin.meta")
             for step in steps]
    assert order.index("services.yml") < order.index("doctor.yml") < order.index(
        "flush_handlers")
    assert order.count("flush_handlers") == 1


def test_doctor_skips_outside_dns_off_relays_and_stops_the_play_itself() -> None:
    # Regression: doctor failed the whole play on an app host without outside DNS.
    run = task_named("doctor.yml", "Run swiftmail doctor")
    assert run["failed_when"] is False and run["changed_when"] is False
    environment = jinja2.Environment()  # noqa: S701 (an expression, not HTML)
    environment.filters["bool"] = lambda value: str(value).lower() in ("true", "yes", "1")
    argv = run["ansible.builtin.command"]["argv"]
    for outside, expected in ((True, []), (False, ["--no-outside-dns"])):
        rendered = environment.from_string(argv).render(
            swiftmail_venv="/opt/swiftmail/venv", swiftmail_doctor_outside_dns=outside)
        assert rendered.strip() == repr(["/opt/swiftmail/venv/bin/swiftmail", "doctor",
                                         *expected])
    assert role_files.defaults()["swiftmail_doctor_outside_dns"] == (
        "{{ swiftmail_relay_enabled }}")
    stop = task_named("doctor.yml", "Stop before restarting anything when a check failed")
    assert "were NOT restarted" in stop["ansible.builtin.fail"]["msg"]


def test_check_mode_predicts_only_real_changes() -> None:
    # Regression: `--check --diff` predicted changes the real run did not make.
    for path in (ROLE_DIR / "tasks").glob("*.yml"):
        for task in role_files.tasks(path):
            assert "ansible.builtin.shell" not in task, task["name"]
            command = task.get("ansible.builtin.command")
            if command is not None:
                assert "changed_when" in task or "creates" in command, task["name"]
    install = task_named("install.yml", "Install SwiftMail")
    environment = jinja2.Environment()  # noqa: S701 (an expression, not HTML)
    when = environment.compile_expression(install["when"].strip().replace(
        " is changed", ".changed"))
    def runs(source: str, copied: bool, installed: bool) -> bool:
        return bool(when(swiftmail_install_source=source,
                         swiftmail_wheel_copy={"changed": copied},
                         swiftmail_installed={"stat": {"exists": installed}}))
    assert runs("wheel", copied=False, installed=True) is False, "same wheel: no pip at all"
    assert runs("wheel", copied=True, installed=True) is True
    assert runs("wheel", copied=False, installed=False) is True
    assert runs("pypi", copied=False, installed=True) is True


def test_every_default_is_documented() -> None:
    assert role_files.undocumented_defaults() == []


def test_secrets_and_connection_urls_have_no_defaults() -> None:
    required = {
        *role_files.REQUIRED_SECRETS, *role_files.REQUIRED_PLAIN, *role_files.OPTIONAL_SECRETS
    }
    assert required.isdisjoint(role_files.defaults())
    assert required <= role_files.documented_required_names()


def test_every_variable_the_role_uses_is_defined_or_documented() -> None:
    text = role_files.role_text()
    registered = set(re.findall(r"register: (swiftmail_[a-z0-9_]+)", text))
    role_vars = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")
    known = (set(role_files.defaults()) | set(role_vars) | registered
             | role_files.documented_required_names())
    tags = {tag for task in role_files.tasks(ROLE_DIR / "tasks" / "main.yml")
            for tag in task.get("tags", [])}
    groups = {"swiftmail_api", "swiftmail_worker", "swiftmail_relay", "swiftmail_tracking",
              "swiftmail_migrate", "swiftmail_postgres", "swiftmail_redis", "swiftmail_haproxy",
              "swiftmail_etcd", "swiftmail_patroni", "swiftmail_sentinel", "swiftmail_backup"}
    python = {"swiftmail_core"}  # the pg_monitor task's inline Python
    metrics = set(re.findall(r"# TYPE (swiftmail_[a-z0-9_]+)", text))  # textfile scripts
    used = set(re.findall(r"\b(swiftmail_[a-z0-9_]+)", text)) - tags - groups - python - metrics
    assert used - known == set()


def test_site_playbook_installs_services_then_swiftmail_host_by_host() -> None:
    plays = role_files.load_yaml(ANSIBLE_DIR / "site.yml")
    assert [play["hosts"] for play in plays] == [
        "swiftmail_etcd", "swiftmail_backup:swiftmail_patroni", "swiftmail_patroni",
        "swiftmail_backup", "swiftmail_postgres", "swiftmail_redis", "swiftmail_sentinel",
        "swiftmail", "swiftmail_rollout_first", "swiftmail_rollout_rest", "swiftmail_haproxy"]
    first, rest = plays[8], plays[9]
    for play in (first, rest):
        assert play["become"] is True
        assert [r["role"] if isinstance(r, dict) else r for r in play["roles"]] == ["swiftmail"]
        # Any failure ends the run: the hosts not reached keep their old version.
        assert play["any_errors_fatal"] is True
    assert "serial" not in first
    assert rest["serial"] == "{{ swiftmail_serial | default(1) }}"
    entries = [play["tasks"][0]["ansible.builtin.import_role"]["tasks_from"]
               for play in (*plays[:7], plays[10])]
    assert [f"{entry}.yml" for entry in entries] == [
        "etcd_host.yml", "pgbackrest_host.yml", "patroni_host.yml", "pgbackrest_repository.yml",
        "postgres_host.yml", "redis_host.yml", "sentinel_host.yml", "haproxy_host.yml"]


def test_example_inventory_defines_the_swiftmail_group() -> None:
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=("=",))
    parser.read(ANSIBLE_DIR / "inventory.example")
    children = list(parser["swiftmail:children"])
    assert children and all(child in parser for child in children)


def test_single_host_example_inventory_runs_everything_on_one_host() -> None:
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=("=", " "))
    parser.read(ANSIBLE_DIR / "inventory.single.example")
    (host,) = list(parser["swiftmail"])
    for part in ("api", "worker", "tracking", "relay", "migrate"):
        assert f"swiftmail_{part}" not in parser, "a part group would take parts off the host"
    for group in ("swiftmail_postgres", "swiftmail_redis", "swiftmail_haproxy"):
        assert list(parser[group]) == [host], group


# --- swiftmail.toml ---------------------------------------------------------------


def write_settings(tmp_path: Path, variables: dict[str, Any]) -> Path:
    path = tmp_path / "swiftmail.toml"
    path.write_text(render("swiftmail.toml.j2", variables))
    return path


def test_relay_tables_are_written_as_toml_tables(tmp_path: Path) -> None:
    # IP pools, source addresses and site policies are tables: they were written as the
    # lists of their keys, and the relay refused to start ("'ip_pools' must be a table").
    tables = {"source_addresses": {"own": "10.0.0.21"}, "ip_pools": {"own": ["own"]},
              "policies": {"default": {"max_connections": 3}}}
    path = write_settings(tmp_path, SAMPLE | {"swiftmail_relay_settings": {
        **SAMPLE["swiftmail_relay_settings"], **tables, "default_pool": "own"}})
    relay = tomllib.loads(path.read_text())["plugins"]["relay"]
    assert {name: relay[name] for name in tables} == tables


def test_settings_template_renders_settings_swiftmail_accepts(tmp_path: Path) -> None:
    path = write_settings(tmp_path, SAMPLE)
    data = tomllib.loads(path.read_text())
    assert read_config_file(path) == data  # no unknown keys

    settings = load_settings(path, environ={})
    assert settings.secret_key == SECRET_KEY
    assert settings.db_owner_password == "owner'pass\\word"
    assert settings.db_app_password == 'app"pass%'
    assert settings.db_system_password == "system-pass"
    assert settings.database_url == SAMPLE["swiftmail_database_url"]
    assert settings.database_admin_url == SAMPLE["swiftmail_database_admin_url"]
    assert settings.redis_url == SAMPLE["swiftmail_redis_url"]
    assert settings.public_url == "https://mail.example.com"
    assert settings.data_dir == Path("/var/lib/swiftmail")
    assert settings.storage_dir == Path("/srv/swiftmail-storage")
    assert (settings.db_owner_role, settings.db_app_role, settings.db_system_role) == (
        "swiftmail_owner", "swiftmail_app", "swiftmail_system")
    assert settings.load_plugins == ("web", "relay", "example")
    assert settings.dns_nameservers == ("127.0.0.1", "::1")
    assert settings.dns_port == 5353
    assert settings.log_format == "json"
    assert settings.plugin_settings("example") == {"greeting": "hi", "retries": 3}


def test_managed_settings_list_is_what_the_template_writes(tmp_path: Path) -> None:
    everything = SAMPLE | {"swiftmail_disabled_plugins": ["log_tracking"]}
    written = set(tomllib.loads(render("swiftmail.toml.j2", everything)))
    managed = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")["swiftmail_managed_settings"]
    assert written == set(managed)


def test_extra_settings_are_written_as_given(tmp_path: Path) -> None:
    managed = role_files.load_yaml(ROLE_DIR / "vars" / "main.yml")["swiftmail_managed_settings"]
    free = sorted(
        name for name, field in SETTING_FIELDS.items()
        if name not in managed and field.type in ("int", int)
    )
    if not free:
        pytest.skip("every integer setting is managed by the role")
    extra = {name: 7 for name in free}
    settings = load_settings(
        write_settings(tmp_path, SAMPLE | {"swiftmail_extra_settings": extra}), environ={})
    assert {name: getattr(settings, name) for name in free} == extra


def test_sentinel_settings_go_through_extra_settings(tmp_path: Path) -> None:
    """The README's Redis Sentinel example renders settings SwiftMail reads."""
    from swiftmail_core import redis_clients

    extra = {"redis_sentinels": ["redis1.internal:26379", "redis2.internal:26379"],
             "redis_sentinel_service": "swiftmail", "redis_password": 'p"w'}
    settings = load_settings(
        write_settings(tmp_path, SAMPLE | {"swiftmail_extra_settings": extra}), environ={})
    assert redis_clients.sentinel_addresses(settings) == [("redis1.internal", 26379),
                                                          ("redis2.internal", 26379)]
    assert (settings.redis_sentinel_service, settings.redis_password) == ("swiftmail", 'p"w')
    assert not settings.uses_embedded_redis


def test_relay_table_is_a_valid_relay_config(tmp_path: Path) -> None:
    settings = load_settings(write_settings(tmp_path, SAMPLE), environ={})
    relay = RelayConfig.from_settings(settings)
    assert relay.spool_dir == Path("/var/spool/swiftmail")
    assert relay.hostname == "mx1.example.com"
    assert relay.bounce_listen == ("0.0.0.0", 25)  # noqa: S104
    assert relay.dkim_ed25519 is False
    assert relay.workers == 8
    assert [str(n) for n in relay.allow_networks] == ["10.0.0.0/8", "192.168.0.0/16"]


def test_settings_template_with_only_the_required_variables(tmp_path: Path) -> None:
    path = write_settings(tmp_path, MINIMAL)
    settings = load_settings(path, environ={})
    assert settings.database_admin_url is None
    assert settings.load_plugins is None
    assert settings.public_url == "http://127.0.0.1:8000"
    assert RelayConfig.from_settings(settings).spool_dir == Path("/var/spool/swiftmail")


def test_superuser_url_is_written_only_where_migrations_run(tmp_path: Path) -> None:
    # Regression: the PostgreSQL superuser URL reached every host, relay-only ones too.
    elsewhere = load_settings(write_settings(
        tmp_path, SAMPLE | {"swiftmail_runs_migrations": False}), environ={})
    assert elsewhere.database_admin_url is None
    here = load_settings(write_settings(
        tmp_path, SAMPLE | {"swiftmail_runs_migrations": True}), environ={})
    assert here.database_admin_url == SAMPLE["swiftmail_database_admin_url"]
    for name in ("Run swiftmail init", "Run swiftmail migrate after an upgrade"):
        task = task_named("database.yml", name)
        assert "run_once" not in task, "with serial, run_once migrates once per batch"
        assert task["when"][0] == "swiftmail_runs_migrations | bool"


PARTS_OFF = {f"swiftmail_{part}_enabled": False for part in ("api", "worker", "relay", "tracking")}


@pytest.mark.parametrize(
    ("host", "owner", "app"),
    [
        ({"swiftmail_runs_migrations": True}, True, True),
        ({"swiftmail_runs_migrations": False, "swiftmail_relay_enabled": True}, False, True),
        ({"swiftmail_runs_migrations": False, "swiftmail_api_enabled": True}, False, True),
        ({"swiftmail_runs_migrations": False, "swiftmail_worker_enabled": True}, False, True),
        ({"swiftmail_runs_migrations": False, "swiftmail_tracking_enabled": True}, False, False),
        ({"swiftmail_runs_migrations": False, "swiftmail_relay_enabled": True,
          "swiftmail_db_owner_password_everywhere": True}, True, True),
    ],
    ids=["migration-host", "relay-only", "api-only", "worker-only", "tracking-only",
         "owner-everywhere"],
)
def test_each_host_gets_only_the_database_passwords_its_processes_use(
    tmp_path: Path, host: dict[str, Any], owner: bool, app: bool
) -> None:
    # Regression: relay-only hosts received the owner and app passwords (and the
    # superuser URL). The relay uses the system role and, for mailto unsubscribes
    # (self_service in tenant_tx), the app role; the drainer the system role only;
    # the owner role runs migrations, on the migration host.
    settings = load_settings(write_settings(tmp_path, SAMPLE | PARTS_OFF | host), environ={})
    assert (settings.db_owner_password is not None) is owner
    assert (settings.db_app_password is not None) is app
    assert settings.db_system_password == "system-pass"
    assert settings.secret_key == SECRET_KEY
    assert (settings.database_admin_url is not None) is bool(host["swiftmail_runs_migrations"])


def test_settings_template_needs_the_secrets() -> None:
    without_key = {k: v for k, v in MINIMAL.items() if k != "swiftmail_secret_key"}
    with pytest.raises(jinja2.UndefinedError, match="swiftmail_secret_key"):
        render("swiftmail.toml.j2", without_key)


# --- systemd units ------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_units_run_as_swiftmail_with_the_config_and_hardening(unit: str) -> None:
    entries = service(unit, MINIMAL)
    for expected in [
        ("User", "swiftmail"),
        ("Group", "swiftmail"),
        ("Environment", "SWIFTMAIL_CONFIG=/etc/swiftmail/swiftmail.toml"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/swiftmail /var/spool/swiftmail"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ]:
        assert expected in entries, f"{unit}: {expected}"
    (exec_start,) = [value for key, value in entries if key == "ExecStart"]
    assert exec_start.startswith("/opt/swiftmail/venv/bin/swiftmail ")
    assert parse_unit(render(f"{unit}.service.j2", MINIMAL))["Install"] == [
        ("WantedBy", "multi-user.target")]


def test_worker_stops_gracefully_with_sigint() -> None:
    entries = dict(service("swiftmail-worker", MINIMAL))
    assert entries["ExecStart"] == "/opt/swiftmail/venv/bin/swiftmail worker"
    assert entries["KillSignal"] == "SIGINT"
    assert entries["TimeoutStopSec"] == "120"
    assert "AmbientCapabilities" not in entries


def test_tracking_drainer_stops_with_sigterm_and_no_capabilities() -> None:
    entries = dict(service("swiftmail-tracking", MINIMAL))
    assert entries["ExecStart"] == "/opt/swiftmail/venv/bin/swiftmail tracking drain"
    # SIGINT ends the drainer with exit status 1 (click's "Aborted."): a failed unit.
    assert entries["KillSignal"] == "SIGTERM"
    assert entries["CapabilityBoundingSet"] == ""
    assert "AmbientCapabilities" not in entries


def test_tracking_hot_path_runs_uvicorn_and_the_drainer_yields_to_it() -> None:
    web = dict(service("swiftmail-tracking-web", MINIMAL))
    assert web["ExecStart"] == ("/opt/swiftmail/venv/bin/swiftmail tracking serve "
                                "--bind 127.0.0.1:8001 --workers 2")
    assert web["KillSignal"] == "SIGTERM" and web["CapabilityBoundingSet"] == ""
    assert "Nice" not in web
    assert dict(service("swiftmail-tracking", MINIMAL))["Nice"] == "10"


def test_every_unit_has_an_enable_flag_in_the_services_loop() -> None:
    start = task_named("services.yml", "Enable and start, or stop and disable, each service")
    flags = {item["name"]: item["enabled"] for item in start["loop"]}
    assert set(flags) == set(UNITS)
    defaults = role_files.defaults()
    for unit, flag in flags.items():
        name = f"swiftmail_{unit.removeprefix('swiftmail-').replace('-', '_')}_enabled"
        assert flag == "{{ " + name + " }}", unit
        group = name.removesuffix("_enabled")
        if unit == "swiftmail-tracking-web":  # the hot path runs where the drainer runs
            assert defaults[name] == "{{ swiftmail_tracking_enabled }}"
            continue
        assert defaults[name] == (
            f"{{{{ '{group}' not in groups or inventory_hostname in groups['{group}'] }}}}"), name
    for unit in UNITS:
        install = task_named("services.yml", f"Install the {unit} unit")
        assert install["ansible.builtin.template"]["src"] == f"{unit}.service.j2"


def test_swiftmail_is_on_roots_path_and_finds_the_system_settings() -> None:
    from swiftmail_core.settings import SYSTEM_CONFIG

    link = task_named("install.yml", "Put the swiftmail command on the PATH")
    assert link["ansible.builtin.file"]["state"] == "link"
    assert role_files.defaults()["swiftmail_cli_link"] == "/usr/local/bin/swiftmail"
    resolved = role_files.resolve(role_files.defaults())
    assert resolved["swiftmail_config_file"] == str(SYSTEM_CONFIG)


def test_storage_dir_outside_the_data_dir_is_writable() -> None:
    # Regression: imports failed with a read-only file system under ProtectSystem=strict.
    for unit in UNITS:
        entries = dict(service(unit, MINIMAL | {"swiftmail_storage_dir": "/srv/storage"}))
        assert entries["ReadWritePaths"] == (
            "/var/lib/swiftmail /var/spool/swiftmail /srv/storage"), unit


def test_api_serves_with_bind_workers_and_threads() -> None:
    entries = dict(service("swiftmail-api", MINIMAL))
    assert entries["ExecStart"] == (
        "/opt/swiftmail/venv/bin/swiftmail serve --bind 127.0.0.1:8000 --workers 5 "
        "--threads 4 --timeout 30"
    )
    entries = dict(service("swiftmail-api", MINIMAL | {
        "swiftmail_api_bind": "0.0.0.0:9000", "swiftmail_api_workers": 3}))
    assert "--bind 0.0.0.0:9000 --workers 3 " in entries["ExecStart"]
    entries = dict(service("swiftmail-api", MINIMAL | {"ansible_facts": {"processor_vcpus": 48}}))
    assert " --workers 64 " in entries["ExecStart"], "serve accepts at most 64"


def test_relay_gets_the_bind_capability_only_when_asked() -> None:
    entries = dict(service("swiftmail-relay", MINIMAL))
    assert entries["ExecStart"] == "/opt/swiftmail/venv/bin/swiftmail relay run"
    assert "AmbientCapabilities" not in entries
    assert entries["CapabilityBoundingSet"] == ""
    entries = dict(service("swiftmail-relay", MINIMAL | {
        "swiftmail_relay_bind_privileged_ports": True}))
    assert entries["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert entries["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"


def test_extra_service_environment_is_quoted() -> None:
    entries = service("swiftmail-worker", MINIMAL | {
        "swiftmail_service_environment": {"HTTPS_PROXY": 'http://proxy:3128/?a="b"%'}})
    assert ("Environment", '"HTTPS_PROXY=http://proxy:3128/?a=\\"b\\"%%"') in entries


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "swiftmail").write_text("#!/bin/sh\n")
    (venv / "bin" / "swiftmail").chmod(0o755)
    variables = SAMPLE | {"swiftmail_venv": str(venv)}
    paths = []
    for unit in UNITS:
        path = tmp_path / f"{unit}.service"
        path.write_text(render(f"{unit}.service.j2", variables))
        paths.append(str(path))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths],
        capture_output=True, text=True, timeout=60, check=False,
    )
    complaints = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert complaints == []


# --- what the tasks decide from command output ------------------------------------


def task_named(file: str, name: str) -> dict[str, Any]:
    (task,) = [t for t in role_files.tasks(ROLE_DIR / "tasks" / file) if t["name"] == name]
    return task


def changed(task: dict[str, Any], variable: str, stdout: str) -> bool:
    environment = jinja2.Environment()  # noqa: S701 (an expression, not HTML)
    expression = environment.compile_expression(task["changed_when"].strip())
    return bool(expression({variable: {"stdout": stdout}}))


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("settings: /etc/swiftmail/swiftmail.toml\n"
         "migrations applied: none (up to date)\nready: next, `swiftmail tenant create NAME`",
         False),
        ("settings: /etc/swiftmail/swiftmail.toml\n  created role swiftmail_owner\n"
         "  created database swiftmail\nmigrations applied: 0001_schema, 0002_isolation\n",
         True),
        ("settings: /etc/swiftmail/swiftmail.toml\nmigrations applied: 0031_new\n", True),
        ("settings: /etc/swiftmail/swiftmail.toml\n  wrote secret_key\n"
         "migrations applied: none (up to date)\n", True),
    ],
)
def test_init_reports_changed_from_its_output(stdout: str, expected: bool) -> None:
    task = task_named("database.yml", "Run swiftmail init")
    assert task["ansible.builtin.command"]["argv"][1:] == ["init", "--yes"]
    assert "swiftmail_runs_migrations | bool" in task["when"]
    assert changed(task, "swiftmail_init_result", stdout) is expected


def test_migrate_reports_changed_from_its_output() -> None:
    task = task_named("database.yml", "Run swiftmail migrate after an upgrade")
    assert changed(task, "swiftmail_migrate_result", "migrations applied: none (up to date)\n") \
        is False
    assert changed(task, "swiftmail_migrate_result", "migrations applied: 0031_x\n") is True


# --- monitoring -------------------------------------------------------------------


def test_alert_rules_use_only_metrics_swiftmail_exports() -> None:
    rules = role_files.load_yaml(ANSIBLE_DIR / "monitoring" / "swiftmail-alerts.yml")
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {"SwiftMailTargetDown", "SwiftMailRelayDeferralRate", "SwiftMailRelayBounceRate",
            "SwiftMailRelayQueueGrowing", "SwiftMailDoctorFailing"} <= set(alerts)
    exported = role_files.exported_metrics()
    for name, rule in alerts.items():
        used = set(re.findall(r"\b(swiftmail_[a-z_]+)\b", rule["expr"]))
        assert used <= exported, f"{name}: {used - exported}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
    assert 'name="swiftmail-doctor.service"' in alerts["SwiftMailDoctorFailing"]["expr"]


def test_scrape_config_lists_each_process_at_an_address_prometheus_reaches() -> None:
    import yaml

    environment = jinja2.Environment(  # noqa: S701 (a config file, not HTML)
        loader=jinja2.FileSystemLoader(ANSIBLE_DIR), undefined=jinja2.StrictUndefined,
        trim_blocks=True)
    hostvars = {
        "app1": {"ansible_host": "10.0.0.11", "swiftmail_relay_enabled": False,
                 "swiftmail_api_bind": "0.0.0.0:8000"},
        "relay1": {"ansible_host": "10.0.0.21", "swiftmail_api_enabled": False,
                   "swiftmail_relay_settings": {"metrics_listen": "10.0.0.21:9125"}},
    }
    text = environment.get_template("monitoring/prometheus-swiftmail.yml.j2").render(
        groups={"swiftmail": ["app1", "relay1"]}, hostvars=hostvars)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(text)["scrape_configs"]}
    assert jobs == {"swiftmail-api": ["10.0.0.11:8000"],
                    "swiftmail-relay": ["10.0.0.21:9125"],
                    "swiftmail-node": ["10.0.0.11:9100", "10.0.0.21:9100"]}
    # Part groups decide without host flags (a split inventory).
    for variables in hostvars.values():
        variables.pop("swiftmail_relay_enabled", None)
        variables.pop("swiftmail_api_enabled", None)
    text = environment.get_template("monitoring/prometheus-swiftmail.yml.j2").render(
        groups={"swiftmail": ["app1", "relay1"], "swiftmail_api": ["app1"],
                "swiftmail_relay": ["relay1"]}, hostvars=hostvars)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["swiftmail-api"] == ["10.0.0.11:8000"]
    assert jobs["swiftmail-relay"] == ["10.0.0.21:9125"]


def test_scrape_config_finds_the_relays_default_metrics_address() -> None:
    # Regression: relay metrics were off unless metrics_listen was set by hand, and a
    # relay without it was left out of the scrape configuration.
    import yaml

    environment = jinja2.Environment(  # noqa: S701 (a config file, not HTML)
        loader=jinja2.FileSystemLoader(ANSIBLE_DIR), undefined=jinja2.StrictUndefined,
        trim_blocks=True)
    hostvars: dict[str, dict[str, Any]] = {
        "relay1": {"ansible_host": "10.0.0.21"},
        "relay2": {"ansible_host": "10.0.0.22", "swiftmail_relay_metrics_listen": ""},
        "relay3": {"ansible_host": "10.0.0.23", "swiftmail_relay_settings": {"metrics_listen": "off"}},
    }
    text = environment.get_template("monitoring/prometheus-swiftmail.yml.j2").render(
        groups={"swiftmail": list(hostvars), "swiftmail_relay": list(hostvars)},
        hostvars=hostvars)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["swiftmail-relay"] == ["10.0.0.21:9465"]


def test_relay_metrics_are_on_by_default_on_the_private_address() -> None:
    settings = tomllib.loads(render("swiftmail.toml.j2", SAMPLE | {
        "swiftmail_relay_settings": {}, "ansible_host": "10.0.0.21"}))
    assert settings["plugins"]["relay"]["metrics_listen"] == "10.0.0.21:9465"
    off = tomllib.loads(render("swiftmail.toml.j2", SAMPLE | {
        "swiftmail_relay_settings": {}, "swiftmail_relay_metrics_listen": ""}))
    assert "metrics_listen" not in off["plugins"]["relay"]
    no_relay = tomllib.loads(render("swiftmail.toml.j2", SAMPLE | {
        "swiftmail_relay_settings": {}, "swiftmail_relay_enabled": False}))
    assert "metrics_listen" not in no_relay["plugins"]["relay"]
    text = ruleset({"swiftmail_api_enabled": "false", "ansible_host": "10.0.0.21"})
    assert "ip saddr { 10.0.9.5/32 } tcp dport { 9465, 9100 } accept" in text
    text = ruleset({"swiftmail_api_enabled": "false", "swiftmail_relay_metrics_listen": ""})
    assert "ip saddr { 10.0.9.5/32 } tcp dport { 9100 } accept" in text


def test_doctor_timer_runs_doctor_as_swiftmail() -> None:
    entries = dict(parse_unit(render("swiftmail-doctor.service.j2", MINIMAL
                                     | {"swiftmail_relay_enabled": False,
                                        "swiftmail_doctor_outside_dns": False}))["Service"])
    assert entries["Type"] == "oneshot"
    assert entries["ExecStart"] == "/opt/swiftmail/venv/bin/swiftmail doctor --no-outside-dns"
    assert entries["User"] == "swiftmail"
    timer = parse_unit(render("swiftmail-doctor.timer.j2", MINIMAL))
    assert ("OnUnitActiveSec", "15min") in timer["Timer"]
    assert timer["Install"] == [("WantedBy", "timers.target")]


# --- firewall -------------------------------------------------------------------------

FIREWALL = {"swiftmail_firewall_cluster_networks": ["10.0.0.0/24", "fd00::/64"],
            "swiftmail_firewall_monitoring_networks": ["10.0.9.5/32"],
            "swiftmail_firewall_admin_networks": ["192.0.2.0/24"]}


def ruleset(variables: dict[str, Any]) -> str:
    return render("swiftmail-nftables.nft.j2", MINIMAL | FIREWALL | variables)


def test_relay_host_opens_smtp_to_all_and_its_intake_to_the_cluster_only() -> None:
    text = ruleset({"swiftmail_api_enabled": "false",
                    "swiftmail_relay_intake_listen": "10.0.0.21:2526",
                    "swiftmail_relay_settings": {"metrics_listen": "10.0.0.21:9125"}})
    assert 'tcp dport { 25, 587 } accept comment "served to the world"' in text
    assert "ip saddr { 10.0.0.0/24 } tcp dport { 2526 } accept" in text
    assert "ip6 saddr { fd00::/64 } tcp dport { 2526 } accept" in text
    assert "ip saddr { 10.0.9.5/32 } tcp dport { 9125, 9100 } accept" in text
    assert "ip saddr { 192.0.2.0/24 } tcp dport { 22 } accept" in text
    assert "policy drop;" in text


def test_app_host_opens_nothing_to_the_world_and_the_api_to_the_cluster() -> None:
    text = ruleset({"swiftmail_relay_enabled": "false", "swiftmail_api_bind": "0.0.0.0:8000"})
    assert "served to the world" not in text
    assert "ip saddr { 10.0.0.0/24 } tcp dport { 8000 } accept" in text
    # /metrics is served by the API port: only the monitoring hosts reach it from outside.
    assert "ip saddr { 10.0.9.5/32 } tcp dport { 8000, 9100 } accept" in text


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_rendered_ruleset_passes_nft_check(tmp_path: Path) -> None:
    path = tmp_path / "swiftmail.nft"
    path.write_text(ruleset({}))
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_firewall_is_off_by_default_and_validated_before_loading() -> None:
    assert role_files.defaults()["swiftmail_firewall_enabled"] is False
    write = task_named("firewall.yml", "Write the SwiftMail ruleset")
    assert write["ansible.builtin.template"]["validate"] == "nft -c -f %s"
    assert write["notify"] == "Load the SwiftMail firewall"


def test_site_grouping_tasks_report_no_change() -> None:
    # group_by changes only the play's memory, yet reported "changed" on every run:
    # the second run of the split install (make test-ansible) said changed=2.
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    tasks = [task for play in plays for task in play.get("tasks", [])]
    grouping = [task for task in tasks
                if {"ansible.builtin.group_by", "ansible.builtin.add_host"} & set(task)]
    assert grouping and all(task.get("changed_when") is False for task in grouping)
