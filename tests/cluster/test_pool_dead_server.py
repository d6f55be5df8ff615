"""Cut the cable of the server behind an idle pooled connection: the next hand-out moves on.

Three hosts (network namespaces): db1 and db2 (plain PostgreSQL 15, both
writable), app (``tests.cluster.pool_probe``: SwiftMail's pool of the system
role on ``postgresql://db1,db2/swiftmail?target_session_attrs=read-write``
with the default ``db_dead_connection_seconds``). The probe leaves one
connection to db1 idle in the pool, then db1's interface is taken down: no
reset reaches the probe, so only the keepalives and ``tcp_user_timeout`` on
every connection end the pool's check of that connection, after which the
pool opens a new one through the multi-host URL. This is what an API
process does on its first request after a failover (the role's HA machine
test, contrib/ansible/tests/ha/run.sh). Checked: the connection handed out
reaches db2 and its query runs; measured (printed): the seconds it took.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.ha.conftest import measure
from tests.ha.engines import PG_BIN

LIMIT = 90.0
ROOT = Path(__file__).resolve().parents[2]


def _lines(log: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _wait(condition, what: str, *logs: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {path}\n{path.read_text(errors='replace')[-2500:]}" for path in logs)
        time.sleep(0.2)


def _start_postgres(network, name: str, base: Path, log: Path) -> str:  # type: ignore[no-untyped-def]
    """Initialise and start PostgreSQL on ``name``'s address, trusting the bridge."""
    address = network.hosts[name]
    data = base / name
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                    "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                    "--locale=C.UTF-8"], check=True, capture_output=True, timeout=120)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '{address}'\nport = 5432\n"
                   f"unix_socket_directories = '{data}'\nfsync = off\nshared_buffers = 16MB\n")
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 10.77.0.0/24 trust\n")
    network.spawn(name, [str(PG_BIN / "postgres"), "-D", str(data)], log, user="postgres")
    _wait(lambda: network.run_in("app", ["pg_isready", "-q", "-h", address]).returncode == 0,
          f"PostgreSQL on {name}", log)
    for statement in ("CREATE ROLE swiftmail_system LOGIN", "CREATE DATABASE swiftmail"):
        done = network.run_in("app", ["psql", "-h", address, "-U", "postgres", "-d", "postgres",
                                      "-v", "ON_ERROR_STOP=1", "-c", statement])
        assert done.returncode == 0, done.stderr
    return address


def test_an_idle_connection_to_a_cut_off_server_is_replaced(network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = {name: network.add_host(name) for name in ("db1", "db2", "app")}
    base = Path(tempfile.mkdtemp(prefix="swiftmail-cluster-pool-"))
    try:
        shutil.chown(base, "postgres", "postgres")
        for name in ("db1", "db2"):
            _start_postgres(network, name, base, tmp_path / f"{name}.log")
        environ = {
            "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
            "SWIFTMAIL_DATA_DIR": str(tmp_path), "SWIFTMAIL_CONFIG": str(tmp_path / "s.toml"),
            "DATABASE_URL": f"postgresql://{hosts['db1']}:5432,{hosts['db2']}:5432/swiftmail"
                            "?target_session_attrs=read-write",
            "SWIFTMAIL_SECRET_KEY": "cluster-test-secret-" + "x" * 32,
            "SWIFTMAIL_DB_SYSTEM_PASSWORD": "pw",
        }
        log, go = tmp_path / "probe.log", tmp_path / "go"
        probe = network.spawn("app", [sys.executable, "-m", "tests.cluster.pool_probe", str(go)],
                              log, env=environ)
        try:
            _wait(lambda: any(line.get("ready") for line in _lines(log)), "the probe", log)
            assert _lines(log)[0]["server"] == hosts["db1"]
            network.link("db1", up=False)
            go.touch()
            _wait(lambda: len(_lines(log)) > 1, "the connection after the cut", log)
        finally:
            if probe.poll() is None:
                probe.kill()
            probe.wait(10)
        after = _lines(log)[1]
        assert after["error"] is None and after["server"] == hosts["db2"], after
        measure("postgres_idle_pooled_connection_cable_cut", seconds_to_next_query=after["seconds"])
    finally:
        network.remove()  # stop PostgreSQL before its directory goes
        shutil.rmtree(base, ignore_errors=True)
