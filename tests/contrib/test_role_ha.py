"""The role's control planes of high availability require passwords: etcd, Patroni, Sentinel.

Templates are rendered with plain Jinja2 for an HA inventory and, where the
program is installed, checked by it: a ``redis-sentinel`` started with the
rendered settings refuses a client without the password, Patroni's own
configuration loader gives patronictl the REST API's credentials, and the
role's etcd script runs twice against a real ``etcd`` (the second run changes
nothing) and leaves Patroni's user its keys and nothing else.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftmail_core.settings import load_settings
from tests.contrib.role_files import ROLE_DIR, render, tasks
from tests.contrib.test_ansible_role import SAMPLE
from tests.ha.engines import free_port, wait_until_answering

HOSTVARS: dict[str, dict[str, Any]] = {
    "app1": {"ansible_host": "10.0.0.11"},
    "db1": {"ansible_host": "10.0.0.31"},
    "db2": {"ansible_host": "10.0.0.32"},
    "db3": {"ansible_host": "10.0.0.33"},
}
GROUPS: dict[str, list[str]] = {
    "all": list(HOSTVARS),
    "swiftmail": ["app1"],
    "swiftmail_etcd": ["db1", "db2", "db3"],
    "swiftmail_patroni": ["db1", "db2"],
    "swiftmail_redis": ["db1", "db2"],
    "swiftmail_sentinel": ["db1", "db2", "db3"],
}
PASSWORDS = {
    "swiftmail_postgres_superuser_password": "pg-superuser-password",
    "swiftmail_patroni_replication_password": "replication-password",
    "swiftmail_patroni_restapi_password": 'rest"api\\password-1',
    "swiftmail_etcd_root_password": "etcd-root-password-1",
    "swiftmail_etcd_patroni_password": "etcd-patroni-password",
    "swiftmail_redis_password": "redis-password-12345",
    "swiftmail_sentinel_password": 'sentinel"pass\\word-1',
}
SCRIPT = ROLE_DIR / "files" / "swiftmail-etcd-auth.sh"


def on_host(host: str, **changes: Any) -> dict[str, Any]:
    """Return the variables a template sees on ``host`` of the HA inventory."""
    return {**SAMPLE, "groups": GROUPS, "hostvars": HOSTVARS, "inventory_hostname": host,
            **HOSTVARS[host], **PASSWORDS, "swiftmail_database_url":
            "postgresql://10.0.0.31:5432,10.0.0.32:5432/swiftmail"} | changes


# --- Patroni ------------------------------------------------------------------------


def test_patroni_requires_a_password_on_its_api_and_gives_etcd_its_user() -> None:
    config = yaml.safe_load(render("patroni.yml.j2", on_host("db1")))
    assert config["restapi"]["authentication"] == {
        "username": "patroni", "password": PASSWORDS["swiftmail_patroni_restapi_password"]}
    assert config["etcd3"]["username"] == "patroni"
    assert config["etcd3"]["password"] == PASSWORDS["swiftmail_etcd_patroni_password"]
    assert config["etcd3"]["hosts"] == ["10.0.0.31:2379", "10.0.0.32:2379", "10.0.0.33:2379"]


PATRONI_PYTHON = "/usr/bin/python3"


def _patroni_importable() -> bool:
    return Path(PATRONI_PYTHON).exists() and subprocess.run(
        [PATRONI_PYTHON, "-c", "import patroni.request"], capture_output=True,
        check=False).returncode == 0


@pytest.mark.skipif(not _patroni_importable(), reason="Debian's patroni is not installed")
def test_patronictl_takes_the_api_credentials_from_the_settings_file(tmp_path: Path) -> None:
    # patronictl -c /etc/patroni/config.yml: Patroni 3.0 sends restapi.authentication
    # with its unsafe requests (switchover, restart, reinitialize) when ctl has none.
    path = tmp_path / "config.yml"
    path.write_text(render("patroni.yml.j2", on_host("db1")))
    code = ("import sys; from patroni.config import Config; from patroni.request import "
            "PatroniRequest; print(PatroniRequest(Config(sys.argv[1]))._pool.headers"
            "['authorization'])")
    result = subprocess.run([PATRONI_PYTHON, "-c", code, str(path)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    credentials = f"patroni:{PASSWORDS['swiftmail_patroni_restapi_password']}"
    assert result.stdout.strip() == "Basic " + base64.b64encode(credentials.encode()).decode()


def test_etcd_authentication_runs_after_patroni_has_its_credentials() -> None:
    entry = [task.get("ansible.builtin.import_tasks") for task in
             tasks(ROLE_DIR / "tasks" / "patroni_host.yml")]
    assert entry.index("etcd_auth.yml") > entry.index("patroni.yml")
    steps = tasks(ROLE_DIR / "tasks" / "etcd_auth.yml")
    assert steps[0]["ansible.builtin.meta"] == "flush_handlers"  # Patroni reloaded first
    script = steps[1]
    assert script["delegate_to"] == "{{ groups['swiftmail_etcd'][0] }}"
    assert script["run_once"] is True and script["no_log"] is True
    # The passwords go on stdin, never on a command line or in the environment.
    assert "password" not in " ".join(script["ansible.builtin.command"]["argv"])
    assert "environment" not in script
    assert "swiftmail_etcd_root_password" in script["ansible.builtin.command"]["stdin"]


# --- Sentinel -------------------------------------------------------------------------


def test_swiftmail_hosts_pass_the_sentinel_password(tmp_path: Path) -> None:
    path = tmp_path / "swiftmail.toml"
    path.write_text(render("swiftmail.toml.j2", on_host("app1")))
    settings = load_settings(path, environ={})
    assert settings.redis_sentinels == ("10.0.0.31:26379", "10.0.0.32:26379", "10.0.0.33:26379")
    assert settings.redis_sentinel_password == PASSWORDS["swiftmail_sentinel_password"]
    assert settings.redis_password == PASSWORDS["swiftmail_redis_password"]


def test_sentinel_settings_are_written_for_root_alone() -> None:
    written = next(task for task in tasks(ROLE_DIR / "tasks" / "sentinel.yml")
                   if "ansible.builtin.template" in task)["ansible.builtin.template"]
    assert (written["owner"], written["group"], written["mode"]) == ("root", "root", "0600")
    copied = next(task for task in tasks(ROLE_DIR / "handlers" / "main.yml")
                  if task.get("listen") == "Replace Sentinel's settings"
                  and "ansible.builtin.copy" in task)["ansible.builtin.copy"]
    assert (copied["owner"], copied["mode"]) == ("redis", "0600")


@pytest.mark.skipif(not shutil.which("redis-sentinel"), reason="redis-sentinel not installed")
def test_rendered_sentinel_settings_refuse_clients_without_the_password(tmp_path: Path) -> None:
    import re

    import redis

    config = tmp_path / "sentinel.conf"
    port, nobody = free_port(), free_port()
    # The monitored master on loopback, where nothing answers: the test's
    # traffic stays on this host (the inventory's 10.0.0.31 would be routed out).
    config.write_text(re.sub(r"^(sentinel monitor \S+) 10\.0\.0\.31 \d+ ",
                             rf"\1 127.0.0.1 {nobody} ",
                             render("sentinel-swiftmail.conf.j2", on_host("db3")),
                             flags=re.MULTILINE))
    sentinel = subprocess.Popen(
        ["redis-sentinel", str(config), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--pidfile", str(tmp_path / "sentinel.pid"),
         "--supervised", "no", "--logfile", str(tmp_path / "sentinel.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        password = PASSWORDS["swiftmail_sentinel_password"]
        client = redis.Redis(port=port, password=password, socket_timeout=5)
        wait_until_answering(client, sentinel, "redis-sentinel")
        assert client.sentinel_master("swiftmail")["port"] == nobody
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong", socket_timeout=5).ping()
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=20)


# --- etcd: the role's script against a real etcd -----------------------------------


class Etcd:
    """One etcd member on loopback, ours alone; ``etcdctl`` runs against it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            ["etcd", "--name", "t", "--data-dir", str(base / "etcd"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self.etcdctl("endpoint", "health").returncode != 0:
            assert time.monotonic() < deadline, "etcd did not start"
            assert self.process.poll() is None, "etcd exited"
            time.sleep(0.2)

    def etcdctl(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run etcdctl against this member, as ``user`` ("NAME:PASSWORD") if given."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        environ |= {"ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": self.endpoint,
                    "ETCDCTL_DIAL_TIMEOUT": "3s", "ETCDCTL_COMMAND_TIMEOUT": "10s"}
        if user:
            environ["ETCDCTL_USER"] = user
        return subprocess.run(["etcdctl", *argv], capture_output=True, text=True, env=environ,
                              timeout=60, check=False)

    def configure(self, root: str, patroni: str) -> subprocess.CompletedProcess[str]:
        """Run the role's script as the play does (passwords on stdin)."""
        return subprocess.run(
            ["bash", str(SCRIPT), self.endpoint, "patroni", "/service/swiftmail/"],
            input=f"{root}\n{patroni}", capture_output=True, text=True, timeout=120,
            check=False)

    def stop(self) -> None:
        """Kill etcd."""
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """A fresh etcd (authentication off, no users), removed afterwards."""
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        pytest.skip("etcd and etcdctl not installed (etcd-server, etcd-client)")
    member = Etcd(tmp_path)
    try:
        yield member
    finally:
        member.stop()


def changes(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Return what the script says it changed, after checking it succeeded."""
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("changed:")]


def test_etcd_script_requires_users_and_a_rerun_changes_nothing(etcd: Etcd) -> None:
    assert etcd.etcdctl("get", "--prefix", "/").returncode == 0  # open before
    assert len(changes(etcd.configure("root-password-1234", "patroni-password-1"))) == 6
    assert changes(etcd.configure("root-password-1234", "patroni-password-1")) == []

    anonymous = etcd.etcdctl("get", "--prefix", "/service/")
    assert anonymous.returncode != 0 and "user name is empty" in anonymous.stderr
    patroni = "patroni:patroni-password-1"
    assert etcd.etcdctl("put", "/service/swiftmail/leader", "db1", user=patroni).returncode == 0
    assert etcd.etcdctl("get", "/service/swiftmail/leader", user=patroni).stdout.split() == [
        "/service/swiftmail/leader", "db1"]
    for argv in (("put", "/elsewhere", "x"), ("get", "/service/other/leader"),
                 ("user", "list")):
        refused = etcd.etcdctl(*argv, user=patroni)
        assert refused.returncode != 0 and "permission denied" in refused.stderr, argv
    assert etcd.etcdctl("get", "/service/", user="patroni:wrong").returncode != 0


def test_etcd_script_sets_a_changed_password_and_stops_on_a_wrong_root(etcd: Etcd) -> None:
    changes(etcd.configure("root-password-1234", "patroni-password-1"))
    assert changes(etcd.configure("root-password-1234", "patroni-password-2")) == [
        "changed: patroni's password set"]
    assert etcd.etcdctl("get", "/service/swiftmail/x",
                        user="patroni:patroni-password-2").returncode == 0
    assert etcd.etcdctl("get", "/service/swiftmail/x",
                        user="patroni:patroni-password-1").returncode != 0

    refused = etcd.configure("another-root-password", "patroni-password-2")
    assert refused.returncode == 1
    assert "refused root's password (swiftmail_etcd_root_password)" in refused.stderr
    assert "another-root-password" not in refused.stderr + refused.stdout


# --- Redis replicas keep their password -------------------------------------------


def _redis_tasks() -> list[str]:
    return [task["name"] for task in tasks(ROLE_DIR / "tasks" / "redis.yml")]


def test_a_replica_is_restarted_with_the_swiftmail_settings_before_config_rewrite() -> None:
    names = _redis_tasks()
    restart = names.index(
        "Restart Redis with the SwiftMail settings before it becomes a replica (first install only)")
    assert restart < names.index("Make this host a replica of the first Redis host (first install only)")
    assert restart < names.index("Keep the replica setting across restarts (CONFIG REWRITE, first install only)")


CLEANUP_TASK = "Remove stale copies of the Redis password from redis.conf (CONFIG REWRITE)"


def run_cleanup_task(tmp_path: Path, main: Path, password: str) -> str:
    """Run the role's cleanup task on ``main`` with real ansible-playbook; return its recap."""
    from tests.contrib.test_ansible_playbook import run_playbook

    (task,) = [task for task in tasks(ROLE_DIR / "tasks" / "redis.yml")
               if task["name"] == CLEANUP_TASK]
    task = {**task, "ansible.builtin.lineinfile": {
        **task["ansible.builtin.lineinfile"], "path": str(main)}}
    task.pop("notify")
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"swiftmail_redis_password": password,
                      "ansible_python_interpreter": sys.executable},
             "tasks": [task]}]
    playbook = tmp_path / "cleanup.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(playbook, tmp_path, "-i", "localhost,")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_config_rewrite_under_debians_settings_drops_the_password_and_the_role_restores_it(
        tmp_path: Path) -> None:
    """Regression: the replica's REWRITE ran before the restart and left it password-less."""
    import re

    import redis

    password = PASSWORDS["swiftmail_redis_password"]
    port = free_port()
    included = render("redis-swiftmail.conf.j2", on_host("db2"))
    included = re.sub(r"^bind .*$", "bind 127.0.0.1", included, flags=re.MULTILINE)
    settings = tmp_path / "swiftmail.conf"
    settings.write_text(re.sub(r"^port .*$", f"port {port}", included, flags=re.MULTILINE))
    main = tmp_path / "redis.conf"
    # Debian's package starts Redis before the role adds its include.
    main.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsave \"\"\n")

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(["redis-server", str(main)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_until_answering(redis.Redis(port=port, socket_timeout=2), server, "redis-server")
        return server

    def stop(server: subprocess.Popen[bytes]) -> None:
        server.terminate()
        server.wait(timeout=20)

    def answers(login: str | None) -> bool:
        server = start()
        try:
            return bool(redis.Redis(port=port, password=login, socket_timeout=5).ping())
        except redis.AuthenticationError:
            return False
        finally:
            stop(server)

    server = start()
    try:
        with main.open("a") as handle:
            handle.write(f"include {settings}\n")
        # The old order: REPLICAOF and CONFIG REWRITE under Debian's settings.
        anonymous = redis.Redis(port=port, socket_timeout=5)
        anonymous.execute_command("CONFIG", "REWRITE")
    finally:
        stop(server)
    assert re.search(r"^user default on nopass", main.read_text(), re.MULTILINE)
    assert answers(None)  # the password is gone

    assert "changed=1" in run_cleanup_task(tmp_path, main, password)
    assert not answers(None) and answers(password)
    # The new order: CONFIG REWRITE with the SwiftMail settings keeps the
    # password, and the copies it writes are the current one's: a rerun
    # of the play changes nothing.
    server = start()
    try:
        redis.Redis(port=port, password=password, socket_timeout=5).execute_command(
            "CONFIG", "REWRITE")
    finally:
        stop(server)
    assert re.search(r"^masterauth ", main.read_text(), re.MULTILINE)
    assert "changed=0" in run_cleanup_task(tmp_path, main, password)
    assert not answers(None) and answers(password)

    # Regression: those copies sit after the include, so a rotated password
    # in swiftmail.conf never took effect; the cleanup removes stale copies.
    rotated = 'rotated "quoted" \\ back-' + password  # Redis writes it back escaped
    rendered = render("redis-swiftmail.conf.j2",
                      {**on_host("db2"), "swiftmail_redis_password": rotated})
    rendered = re.sub(r"^bind .*$", "bind 127.0.0.1", rendered, flags=re.MULTILINE)
    settings.write_text(re.sub(r"^port .*$", f"port {port}", rendered, flags=re.MULTILINE))
    assert answers(password) and not answers(rotated)
    assert "changed=1" in run_cleanup_task(tmp_path, main, rotated)
    assert answers(rotated) and not answers(password)
    assert "changed=0" in run_cleanup_task(tmp_path, main, rotated)
    server = start()
    try:  # Sentinel's next REWRITE copies the rotated one: still nothing to remove
        redis.Redis(port=port, password=rotated, socket_timeout=5).execute_command(
            "CONFIG", "REWRITE")
    finally:
        stop(server)
    assert "changed=0" in run_cleanup_task(tmp_path, main, rotated)
    assert answers(rotated)


# --- Sentinel keeps what it learned across a settings change --------------------------


def _run_sentinel_handlers(tmp_path: Path) -> None:
    """Run the role's "Replace Sentinel's settings" handlers with ansible-playbook in ``tmp_path``."""
    from tests.contrib.test_ansible_playbook import run_playbook

    text = (ROLE_DIR / "handlers" / "main.yml").read_text()
    text = text.replace("/etc/redis/", f"{tmp_path}/")
    handlers = [task for task in yaml.safe_load(text)
                if task.get("listen", task["name"]) == "Replace Sentinel's settings"]
    assert handlers
    for task in handlers:
        task.pop("listen", None)
        task.pop("notify", None)  # the test restarts its Sentinel itself
        task.pop("no_log", None)
        for module in task.values():
            if isinstance(module, dict):
                module.pop("owner", None)
                module.pop("group", None)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"swiftmail_sentinel_service": "swiftmail",
                      "ansible_python_interpreter": sys.executable},
             "tasks": handlers}]
    playbook = tmp_path / "sentinel-handlers.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(playbook, tmp_path, "-i", "localhost,")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (shutil.which("redis-sentinel") and shutil.which("redis-server")),
                    reason="redis-server and redis-sentinel not installed")
def test_a_rotated_redis_password_reaches_sentinel_and_it_keeps_the_current_master(
        tmp_path: Path) -> None:
    """Regression: a settings change pointed the Sentinels back at the first Redis host.

    The role's copy replaced Sentinel's file whole: the new ``sentinel
    auth-pass`` arrived, but after a failover the Sentinel came back
    monitoring the old master (a replica now) under a new ID.
    """
    import re

    import redis

    old, new = PASSWORDS["swiftmail_redis_password"], "rotated-redis-password-2"
    sentinel_password = PASSWORDS["swiftmail_sentinel_password"]
    first, second, port = free_port(), free_port(), free_port()
    servers = []
    for redis_port, extra in ((first, ""), (second, f"replicaof 127.0.0.1 {first}\n")):
        config = tmp_path / f"redis-{redis_port}.conf"
        config.write_text(f"port {redis_port}\nbind 127.0.0.1\ndir {tmp_path}\nsave \"\"\n"
                          f"requirepass {old}\nmasterauth {old}\n{extra}")
        servers.append(subprocess.Popen(["redis-server", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until_answering(redis.Redis(port=redis_port, password=old, socket_timeout=2),
                             servers[-1], "redis-server")

    def write_role_copy(password: str) -> None:
        text = render("sentinel-swiftmail.conf.j2", on_host(
            "db1", swiftmail_redis_password=password, swiftmail_sentinel_port=port,
            swiftmail_redis_port=first, swiftmail_sentinel_quorum=1,
            swiftmail_sentinel_down_after_ms=1000))
        text = re.sub(r"^bind .*$", "bind 127.0.0.1", text, flags=re.MULTILINE)
        text = re.sub(r"^(sentinel monitor \S+) \S+ ", r"\1 127.0.0.1 ", text, flags=re.MULTILINE)
        text = re.sub(r"^(supervised|pidfile|logfile|dir) .*$", "", text, flags=re.MULTILINE)
        (tmp_path / "sentinel-swiftmail.conf").write_text(text + f"dir {tmp_path}\n")

    def start() -> tuple[subprocess.Popen[bytes], Any]:
        process = subprocess.Popen(["redis-sentinel", str(tmp_path / "sentinel.conf")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port, password=sentinel_password, socket_timeout=2,
                             decode_responses=True)
        wait_until_answering(client, process, "redis-sentinel")
        return process, client

    def until(check: Any) -> None:
        for _ in range(150):
            if check():
                return
            time.sleep(0.2)
        raise AssertionError("Sentinel never got there")

    def role_of(redis_port: int, password: str) -> str:
        return str(redis.Redis(port=redis_port, password=password, socket_timeout=2)
                   .info("replication")["role"])

    def master(client: Any) -> int:
        return int(client.execute_command("SENTINEL", "get-master-addr-by-name", "swiftmail")[1])

    sentinel = None
    try:
        write_role_copy(old)
        _run_sentinel_handlers(tmp_path)  # the first install: the first host is the master
        sentinel, client = start()
        assert master(client) == first
        identity = client.execute_command("SENTINEL", "myid")

        def failover() -> bool:
            try:  # NOGOODSLAVE until Sentinel has seen the replica answer for a while
                return bool(client.execute_command("SENTINEL", "failover", "swiftmail"))
            except redis.ResponseError:
                return False

        until(failover)
        until(lambda: master(client) == second and role_of(first, old) == "slave")

        # The Redis play rotates the password; the Sentinel play writes its copy.
        for redis_port in (first, second):
            server = redis.Redis(port=redis_port, password=old, socket_timeout=2)
            server.config_set("masterauth", new)
            server.config_set("requirepass", new)
        write_role_copy(new)
        sentinel.terminate()
        sentinel.wait(timeout=20)
        _run_sentinel_handlers(tmp_path)
        sentinel, client = start()

        written = (tmp_path / "sentinel.conf").read_text()
        # One auth-pass, the new one (quoted as the role writes it or bare as Sentinel does).
        assert [line.replace('"', "") for line in re.findall(
            r"^sentinel auth-pass .*$", written, re.MULTILINE)] == [
            f"sentinel auth-pass swiftmail {new}"]
        assert master(client) == second  # not the first host, a replica since the failover
        assert client.execute_command("SENTINEL", "myid") == identity
        # It reaches the master with the new password: it lists the replica it found there.
        until(lambda: any(str(first) == str(replica.get("port")) and "s_down" not in
                          str(replica.get("flags")) for replica in client.execute_command(
                              "SENTINEL", "replicas", "swiftmail")))
        assert "s_down" not in str(client.execute_command("SENTINEL", "master", "swiftmail"))
    finally:
        for process in [*servers, *([sentinel] if sentinel else [])]:
            process.terminate()
            process.wait(timeout=20)


@pytest.mark.skipif(not (shutil.which("redis-sentinel") and shutil.which("redis-server")),
                    reason="redis-server and redis-sentinel not installed")
def test_the_first_install_replaces_the_packaged_sentinel_settings(tmp_path: Path) -> None:
    """Regression: Sentinel did not start after the first install (CI's HA scenario).

    Debian's redis-sentinel package starts a Sentinel on its own file, which
    monitors a ``mymaster`` and gets epochs for it. The handler kept those
    epoch lines beside the role's copy, which monitors only ``swiftmail``:
    Sentinel refuses an epoch for a master it does not monitor and exits.
    """
    import re

    import redis

    port, nobody = free_port(), free_port()
    # The package's file, as shipped (its daemon and path settings made local).
    (tmp_path / "sentinel.conf").write_text(
        f"protected-mode no\nport {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {nobody} 2\n"
        "sentinel down-after-milliseconds mymaster 30000\n"
        "sentinel parallel-syncs mymaster 1\nsentinel failover-timeout mymaster 180000\n"
        "sentinel deny-scripts-reconfig yes\n")
    packaged = subprocess.Popen(["redis-sentinel", str(tmp_path / "sentinel.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the package's Sentinel rewrites its file with an ID and epochs for mymaster
        wait_until_answering(redis.Redis(port=port, socket_timeout=2), packaged, "redis-sentinel")
        for _ in range(100):
            if re.search(r"^sentinel config-epoch mymaster ",
                         (tmp_path / "sentinel.conf").read_text(), re.MULTILINE):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the packaged Sentinel never wrote its epochs")
        packaged_id = redis.Redis(port=port, socket_timeout=2).execute_command("SENTINEL", "myid")
    finally:
        packaged.terminate()
        packaged.wait(timeout=20)

    text = render("sentinel-swiftmail.conf.j2", on_host("db1", swiftmail_sentinel_port=port))
    text = re.sub(r"^bind .*$", "bind 127.0.0.1", text, flags=re.MULTILINE)
    text = re.sub(r"^(sentinel monitor \S+) \S+ \d+ ", rf"\1 127.0.0.1 {nobody} ", text,
                  flags=re.MULTILINE)
    text = re.sub(r"^(supervised|pidfile|logfile|dir) .*$", "", text, flags=re.MULTILINE)
    (tmp_path / "sentinel-swiftmail.conf").write_text(text + f"dir {tmp_path}\n")
    _run_sentinel_handlers(tmp_path)

    sentinel = subprocess.Popen(["redis-sentinel", str(tmp_path / "sentinel.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=PASSWORDS["swiftmail_sentinel_password"],
                             socket_timeout=2, decode_responses=True)
        wait_until_answering(client, sentinel, "redis-sentinel")
        assert [master["name"] for master in client.sentinel_masters().values()] == ["swiftmail"]
        # A new ID: one learned from a file that watched something else is not ours to keep.
        assert client.execute_command("SENTINEL", "myid") != packaged_id.decode()
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=20)
