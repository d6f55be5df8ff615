"""Run the role through the real ``ansible-playbook`` on localhost.

Only what touches nothing on the machine: the syntax check, the preflight
assertions and the template module writing into a temporary directory.
Skipped when ansible-core (the ``dev`` extra) is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contrib.role_files import ANSIBLE_DIR, ROLE_DIR, TEMPLATES_DIR, UNITS, render
from tests.contrib.test_ansible_role import SAMPLE

pytest.importorskip("ansible", reason="ansible-core is not installed (pip install -e .[dev])")

VAULT_PASSWORD = "contrib-test-vault-password"
TEMPLATES = ("swiftmail.toml", *(f"{unit}.service" for unit in UNITS))


def ansible_playbook() -> str:
    """Return the ansible-playbook next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        pytest.skip("ansible-playbook not found")
    return found


def run_playbook(
    playbook: Path, tmp_path: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook with its state kept in ``tmp_path``."""
    environ = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_ROLES_PATH": str(ROLE_DIR.parent),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    return subprocess.run(
        [ansible_playbook(), str(playbook), *args],
        cwd=cwd or tmp_path, env=environ, capture_output=True, text=True, timeout=120,
        check=False,
    )


def vaulted(value: str) -> str:
    """Return ``value`` encrypted with the test vault password, as vault text."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    return vault.encrypt(value).decode()


def write_play(tmp_path: Path, variables: dict[str, Any], secret_key: str | None,
               templates: tuple[str, ...] = TEMPLATES) -> Path:
    """Write a localhost play: the role's preflight, then its ``templates``."""
    text = yaml.safe_dump(variables, sort_keys=True)
    if secret_key is not None:
        block = "\n".join("  " + line for line in vaulted(secret_key).splitlines())
        text += f"swiftmail_secret_key: !vault |\n{block}\n"
    (tmp_path / "vars.yml").write_text(text)
    (tmp_path / "vault-password").write_text(VAULT_PASSWORD + "\n")
    (tmp_path / "out").mkdir(exist_ok=True)
    play = [{
        "name": "Role preflight and templates",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(tmp_path / "vars.yml")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Preflight", "ansible.builtin.include_role": {
                "name": "swiftmail", "tasks_from": "preflight", "public": True}},
            {"name": "Render", "ansible.builtin.template": {
                "src": f"{TEMPLATES_DIR}/{{{{ item }}}}.j2",
                "dest": f"{tmp_path}/out/{{{{ item }}}}", "mode": "0600"},
             "loop": list(templates)},
        ],
    }]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def play_variables(**changes: Any) -> dict[str, Any]:
    """Return SAMPLE without the vaulted key and facts, with ``changes`` applied."""
    variables = {k: v for k, v in SAMPLE.items() if k not in ("swiftmail_secret_key",
                                                             "ansible_facts")}
    variables["swiftmail_api_workers"] = 5
    variables["swiftmail_tracking_web_workers"] = 2
    for name, value in changes.items():
        if value is None:
            variables.pop(name, None)
        else:
            variables[name] = value
    return variables


@pytest.mark.parametrize("inventory", ["inventory.example", "inventory.single.example"])
def test_site_playbook_passes_syntax_check(tmp_path: Path, inventory: str) -> None:
    result = run_playbook(
        ANSIBLE_DIR / "site.yml", tmp_path, "--syntax-check", "-i",
        str(ANSIBLE_DIR / inventory), cwd=ANSIBLE_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_renders_the_templates_like_plain_jinja(tmp_path: Path) -> None:
    variables = play_variables()
    play = write_play(tmp_path, variables, SAMPLE["swiftmail_secret_key"])
    result = run_playbook(play, tmp_path, "-i", "localhost,", "--vault-password-file",
                          str(tmp_path / "vault-password"))
    assert result.returncode == 0, result.stdout + result.stderr
    # relays.yml did not run: the role's vars say this host does not migrate.
    expected_context = variables | {"swiftmail_secret_key": SAMPLE["swiftmail_secret_key"],
                                    "swiftmail_runs_migrations": False}
    for name in TEMPLATES:
        rendered = (tmp_path / "out" / name).read_text()
        assert rendered == render(f"{name}.j2", expected_context), name
    assert 'secret_key = "k3y\\"with\\\\quotes-' in (tmp_path / "out" / "swiftmail.toml").read_text()


def test_ansible_writes_the_firewall_rules_of_the_parts_a_host_runs(tmp_path: Path) -> None:
    # Under ansible-core 2.19 the template once compared a macro's output with 'True',
    # never equal there: a relay host got no 25/587 rule and the cluster no API/intake rule.
    variables = play_variables(swiftmail_firewall_cluster_networks=["10.0.0.0/24"])
    play = write_play(tmp_path, variables, SAMPLE["swiftmail_secret_key"],
                      templates=("swiftmail-nftables.nft",))
    result = run_playbook(play, tmp_path, "-i", "localhost,", "--vault-password-file",
                          str(tmp_path / "vault-password"))
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = (tmp_path / "out" / "swiftmail-nftables.nft").read_text()
    assert 'tcp dport { 25, 587 } accept comment "served to the world"' in rendered
    assert 'ip saddr { 10.0.0.0/24 } tcp dport { 8000, 2526 } accept comment "cluster members only"' \
        in rendered
    context = variables | {"swiftmail_secret_key": SAMPLE["swiftmail_secret_key"]}
    assert rendered == render("swiftmail-nftables.nft.j2", context)


@pytest.mark.parametrize(
    ("changes", "secret_key", "message"),
    [
        ({}, None, "swiftmail_secret_key is missing or shorter than 32 characters"),
        ({}, "x" * 31, "swiftmail_secret_key is missing or shorter than 32 characters"),
        ({"swiftmail_db_app_password": None}, SAMPLE["swiftmail_secret_key"],
         "swiftmail_db_app_password is missing or empty"),
        ({"swiftmail_database_url": "postgresql://db.internal"}, SAMPLE["swiftmail_secret_key"],
         "swiftmail_database_url is missing or names no database"),
        ({"swiftmail_install_source": "wheel"}, SAMPLE["swiftmail_secret_key"],
         "swiftmail_install_source must be pypi"),
        ({"swiftmail_relay_bind_privileged_ports": False}, SAMPLE["swiftmail_secret_key"],
         "set swiftmail_relay_bind_privileged_ports: true"),
        ({"swiftmail_extra_settings": {"log_level": "debug"}}, SAMPLE["swiftmail_secret_key"],
         "swiftmail_extra_settings sets log_level"),
        ({"swiftmail_relay_settings": {"submission_listen": "0.0.0.0:2587"},
          "swiftmail_relay_tls_self_signed": False},
         SAMPLE["swiftmail_secret_key"],
         "trusted_listeners is not set and there is no tls_cert"),
    ],
    ids=["no-key", "short-key", "no-app-password", "no-dbname", "wheel-without-path",
         "port-25-without-capability", "extra-setting-collides",
         "submission-moved-without-trusted-listeners"],
)
def test_preflight_stops_with_a_clear_message(
    tmp_path: Path, changes: dict[str, Any], secret_key: str | None, message: str
) -> None:
    play = write_play(tmp_path, play_variables(**changes), secret_key)
    result = run_playbook(play, tmp_path, "-i", "localhost,", "--vault-password-file",
                          str(tmp_path / "vault-password"))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert list((tmp_path / "out").iterdir()) == [], "nothing rendered after a failed check"


RELAY_ONLY = "swiftmail_worker_enabled=false swiftmail_relay_intake_listen=10.0.0.21:2526"


def _relay_play(tmp_path: Path, inventory: str,
                serial: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the role's relays.yml on local hosts; each writes the relays it worked out."""
    (tmp_path / "inventory").write_text(inventory)
    (tmp_path / "out").mkdir(exist_ok=True)
    play = [{
        "name": "Relays the workers hand mail to",
        "hosts": "all",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        **({"serial": serial} if serial else {}),
        "tasks": [
            {"name": "Work out the relays", "ansible.builtin.include_role": {
                "name": "swiftmail", "tasks_from": "relays", "public": True}},
            {"name": "Write them", "ansible.builtin.copy": {
                "content": "{{ swiftmail_relay_intakes | to_json }}",
                "dest": f"{tmp_path}/out/{{{{ inventory_hostname }}}}.json", "mode": "0600"}},
            {"name": "Write whether it migrates", "ansible.builtin.copy": {
                "content": "{{ swiftmail_runs_migrations | bool | to_json }}",
                "dest": f"{tmp_path}/out/{{{{ inventory_hostname }}}}.migrates", "mode": "0600"}},
        ],
    }]
    path = tmp_path / "relays.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return run_playbook(path, tmp_path, "-i", str(tmp_path / "inventory"))


def test_workers_on_app_hosts_are_given_every_relay_host(tmp_path: Path) -> None:
    import json

    result = _relay_play(tmp_path, (
        "app1 swiftmail_relay_enabled=false\n"
        "relay1 swiftmail_worker_enabled=false swiftmail_relay_intake_listen=10.0.0.21:2526\n"
        "relay2 swiftmail_worker_enabled=false swiftmail_relay_intake_listen=10.0.0.22:2526\n"))
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads((tmp_path / "out" / "app1.json").read_text())
    assert written == ["10.0.0.21:2526", "10.0.0.22:2526"]


def test_a_rolling_play_gives_workers_every_relay_host(tmp_path: Path) -> None:
    # Regression: relays came from facts each host published, so with `serial: 1`
    # a worker saw only the relays of its own batch (none: the play stopped).
    import json

    result = _relay_play(tmp_path, (
        "[swiftmail_relay]\n"
        "relay1 swiftmail_relay_intake_listen=10.0.0.21:2526\n"
        "relay2 swiftmail_relay_intake_listen=10.0.0.22:2526\n"
        "[apps]\napp1\n"), serial=1)
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads((tmp_path / "out" / "app1.json").read_text())
    assert written == ["10.0.0.21:2526", "10.0.0.22:2526"]


def test_a_worker_given_only_a_loopback_relay_elsewhere_stops_the_play(tmp_path: Path) -> None:
    # Regression: with the relay on another host, the worker handed mail to its own
    # disk (or its own loopback) and every message was stranded.
    result = _relay_play(tmp_path, (
        "app1 swiftmail_relay_enabled=false\n"
        "relay1 swiftmail_worker_enabled=false\n"))
    assert result.returncode != 0
    assert "could reach no relay" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "relay_settings",
    [{"submission_listen": "0.0.0.0:2587", "trusted_listeners": "127.0.0.1:2587"},
     {"submission_listen": "0.0.0.0:2587", "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem"},
     {"submission_listen": "off"},
     # Regression: the role's self-signed certificate gives STARTTLS, so AUTH works
     # on the moved listener; the check refused it.
     {"submission_listen": "0.0.0.0:2587"}],
    ids=["trusted-listeners", "tls-cert", "off", "self-signed-certificate"],
)
def test_preflight_accepts_a_moved_submission_listener_that_keeps_auth(
    tmp_path: Path, relay_settings: dict[str, str]
) -> None:
    play = write_play(tmp_path, play_variables(swiftmail_relay_settings=relay_settings,
                                               swiftmail_relay_bind_privileged_ports=False),
                      SAMPLE["swiftmail_secret_key"])
    result = run_playbook(play, tmp_path, "-i", "localhost,", "--vault-password-file",
                          str(tmp_path / "vault-password"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_preflight_leaves_the_submission_listener_to_relay_hosts(tmp_path: Path) -> None:
    # Regression: relay settings in group_vars reach every host; an app host (no relay,
    # so no certificate made) stopped the play over a listener it does not run.
    play = write_play(tmp_path, play_variables(
        swiftmail_relay_settings={"submission_listen": "0.0.0.0:2587"},
        swiftmail_relay_enabled=False, swiftmail_relay_bind_privileged_ports=False),
        SAMPLE["swiftmail_secret_key"])
    result = run_playbook(play, tmp_path, "-i", "localhost,", "--vault-password-file",
                          str(tmp_path / "vault-password"))
    assert result.returncode == 0, result.stdout + result.stderr


def _wheel_tasks(tmp_path: Path, wheels: list[str], current: str, keep: int) -> list[str]:
    """Run the role's own wheel-pruning tasks on a local directory; return what is left."""
    import time

    dist = tmp_path / "dist"
    dist.mkdir()
    for age, name in enumerate(wheels):  # the first named is the newest
        (dist / name).write_text(name)
        stamp = time.time() - 100 * (age + 1)
        os.utime(dist / name, (stamp, stamp))
    (dist / "notes.txt").write_text("not a wheel")
    steps = [task for task in yaml.safe_load((ROLE_DIR / "tasks" / "install.yml").read_text())
             if task["name"] in ("List the copied wheels", "Delete the older wheels")]
    assert len(steps) == 2
    play = [{
        "name": "Prune wheels", "hosts": "localhost", "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable,
                 "swiftmail_install_source": "wheel", "swiftmail_dist_dir": str(dist),
                 "swiftmail_wheel_path": f"/controller/{current}",
                 "swiftmail_keep_wheels": keep},
        "tasks": steps,
    }]
    path = tmp_path / "prune.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(path, tmp_path, "-i", "localhost,")
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(p.name for p in dist.iterdir())


def test_old_wheels_are_pruned_keeping_the_installed_one(tmp_path: Path) -> None:
    # Regression: every upgrade left its wheel behind in the dist directory.
    wheels = ["swiftmail-0.4-py3-none-any.whl", "swiftmail-0.3-py3-none-any.whl",
              "swiftmail-0.2-py3-none-any.whl", "swiftmail-0.1-py3-none-any.whl"]
    left = _wheel_tasks(tmp_path, wheels, current="swiftmail-0.4-py3-none-any.whl", keep=2)
    assert left == ["notes.txt", "swiftmail-0.3-py3-none-any.whl",
                    "swiftmail-0.4-py3-none-any.whl"]


def test_the_installed_wheel_stays_even_when_older_than_the_rest(tmp_path: Path) -> None:
    wheels = ["swiftmail-0.4-py3-none-any.whl", "swiftmail-0.3-py3-none-any.whl"]
    left = _wheel_tasks(tmp_path, wheels, current="swiftmail-0.3-py3-none-any.whl", keep=1)
    assert left == ["notes.txt", "swiftmail-0.3-py3-none-any.whl"]


def test_role_passes_ansible_lint_production_profile(tmp_path: Path) -> None:
    beside = Path(sys.executable).parent / "ansible-lint"
    lint = str(beside) if beside.exists() else shutil.which("ansible-lint")
    if not lint:
        pytest.skip("ansible-lint not installed (pip install -e .[dev])")
    environ = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "NO_COLOR": "1",
               "ANSIBLE_ROLES_PATH": str(ROLE_DIR.parent)}
    result = subprocess.run(
        [lint, "--profile", "production", "--offline", "--nocolor", "site.yml", "monitoring.yml",
         "roles/swiftmail"],
        cwd=ANSIBLE_DIR, env=environ, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("inventory", "migrating"),
    [
        ("app1 swiftmail_relay_enabled=false\napp2 swiftmail_relay_enabled=false\n"
         f"relay1 {RELAY_ONLY}\n", "app1"),
        ("[swiftmail_migrate]\napp2 swiftmail_relay_enabled=false\n[others]\n"
         f"app1 swiftmail_relay_enabled=false\nrelay1 {RELAY_ONLY}\n", "app2"),
    ],
    ids=["first-host", "migrate-group"],
)
def test_exactly_one_host_runs_the_migrations(
    tmp_path: Path, inventory: str, migrating: str
) -> None:
    import json

    result = _relay_play(tmp_path, inventory)
    assert result.returncode == 0, result.stdout + result.stderr
    flags = {path.stem: json.loads(path.read_text())
             for path in (tmp_path / "out").glob("*.migrates")}
    assert flags == {host: host == migrating for host in ("app1", "app2", "relay1")}


def test_part_groups_decide_which_services_a_host_runs(tmp_path: Path) -> None:
    # Host groups per part: a host runs a part only when it is in that part's group
    # (when the inventory has the group); a part without a group runs everywhere.
    import json

    (tmp_path / "inventory").write_text(
        "[swiftmail_relay]\nrelay1 swiftmail_relay_intake_listen=10.0.0.21:2526\n"
        "[swiftmail_api]\napp1\n[swiftmail_worker]\napp1\n"
        "[swiftmail_tracking]\napp1\n")
    (tmp_path / "out").mkdir()
    play = [{
        "name": "Flags", "hosts": "all", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Work out the relays", "ansible.builtin.include_role": {
                "name": "swiftmail", "tasks_from": "relays", "public": True}},
            {"name": "Write the flags", "ansible.builtin.copy": {
                "content": "{{ {'api': swiftmail_api_enabled | bool,"
                           " 'worker': swiftmail_worker_enabled | bool,"
                           " 'relay': swiftmail_relay_enabled | bool,"
                           " 'tracking': swiftmail_tracking_enabled | bool,"
                           " 'relays': swiftmail_relay_intakes} | to_json }}",
                "dest": f"{tmp_path}/out/{{{{ inventory_hostname }}}}.json", "mode": "0600"}},
        ],
    }]
    path = tmp_path / "flags.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(path, tmp_path, "-i", str(tmp_path / "inventory"))
    assert result.returncode == 0, result.stdout + result.stderr
    app = json.loads((tmp_path / "out" / "app1.json").read_text())
    relay = json.loads((tmp_path / "out" / "relay1.json").read_text())
    assert app == {"api": True, "worker": True, "relay": False, "tracking": True,
                   "relays": ["10.0.0.21:2526"]}
    assert relay == {"api": False, "worker": False, "relay": True, "tracking": False,
                     "relays": ["10.0.0.21:2526"]}


@pytest.mark.parametrize(
    ("migrate_group", "first"),
    [("[swiftmail_migrate]\nrelay2\n", "relay2"), ("", "app1")],
    ids=["migrate-group", "first-swiftmail-host"],
)
def test_site_rolls_the_migration_host_first_then_the_rest_one_by_one(
    tmp_path: Path, migrate_group: str, first: str
) -> None:
    # Regression: a play's hosts run in inventory order whatever its pattern says,
    # so "swiftmail_migrate:swiftmail" did not put the migration host first.
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    by_hosts = {play["hosts"]: play for play in plays}
    order, first_play, rest_play = (by_hosts["swiftmail"], by_hosts["swiftmail_rollout_first"],
                                    by_hosts["swiftmail_rollout_rest"])
    log = tmp_path / "order.log"
    record = {"name": "Record", "ansible.builtin.lineinfile": {
        "path": str(log), "line": "{{ inventory_hostname }} {{ ansible_play_batch | length }}",
        "create": True, "mode": "0600"}}
    stub = [
        {**order, "vars": {"ansible_python_interpreter": sys.executable}},
        *({"name": play["name"], "hosts": play["hosts"], "gather_facts": False,
           "serial": play.get("serial", 0), "tasks": [record],
           "vars": {"ansible_python_interpreter": sys.executable}}
          for play in (first_play, rest_play)),
    ]
    (tmp_path / "rollout.yml").write_text(yaml.safe_dump(stub, sort_keys=False))
    (tmp_path / "inventory").write_text(
        "[swiftmail_relay]\nrelay1\nrelay2\n[swiftmail_api]\napp1\n"
        "[swiftmail:children]\nswiftmail_api\nswiftmail_relay\n" + migrate_group
        + "[all:vars]\nansible_connection=local\n")
    result = run_playbook(tmp_path / "rollout.yml", tmp_path, "-i", str(tmp_path / "inventory"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == f"{first} 1"
    assert sorted(lines[1:]) == sorted(f"{host} 1" for host in ("app1", "relay1", "relay2")
                                       if host != first)


def test_ansible_renders_scrape_targets_for_each_part(tmp_path: Path) -> None:
    # Regression: under ansible-core 2.19 the template compared a macro's "True" with
    # 'True' (always false once Ansible made it a boolean): no api or relay targets.
    (tmp_path / "inventory").write_text(
        "[swiftmail]\n"
        "app1 ansible_host=10.0.0.11 swiftmail_api_bind=0.0.0.0:8000 ansible_connection=local\n"
        "relay1 ansible_host=10.0.0.21 ansible_connection=local "
        "swiftmail_relay_settings='{\"metrics_listen\": \"10.0.0.21:9125\"}'\n"
        "[swiftmail_api]\napp1\n[swiftmail_relay]\nrelay1\n")
    out = tmp_path / "prometheus.yml"
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "name": "Render the scrape configuration", "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(ANSIBLE_DIR / "monitoring" / "prometheus-swiftmail.yml.j2"),
            "dest": str(out), "mode": "0644"}}],
    }]))
    result = run_playbook(play, tmp_path, "-i", str(tmp_path / "inventory"), "-i", "localhost,",
                          "-c", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(out.read_text())["scrape_configs"]}
    assert jobs["swiftmail-api"] == ["10.0.0.11:8000"]
    assert jobs["swiftmail-relay"] == ["10.0.0.21:9125"]
