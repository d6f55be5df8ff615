"""Cut the Patroni leader's cable: the standby is promoted, a worker's writes carry on.

Four hosts (network namespaces): etcd, db1 and db2 (Patroni with PostgreSQL
15, synchronous, ``ttl: 10``), app (a worker-like probe claiming and
recording one message at a time through the multi-host URL). The leader's
interface is taken down: its connections go silent, so it is TCP keepalives
and ``tcp_user_timeout`` (``db_dead_connection_seconds``, 10 here) that end
the worker's wait, then the failover retry waits for Patroni's promotion.
Measured (printed): seconds from the cut to the next committed write, failed
operations; every message must end ``accepted``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.ha.conftest import measure
from tests.ha.patroni import config

PG_PORT, REST_PORT, ETCD_PORT, ETCD_PEER_PORT = 5432, 8008, 2379, 2380
LIMIT = 90.0
MESSAGES = 400
ROOT = Path(__file__).resolve().parents[2]


def _leader(network, hosts) -> str | None:  # type: ignore[no-untyped-def]
    for name in ("db1", "db2"):
        code = network.run_in("app", ["curl", "-s", "-o", "/dev/null", "-m", "2", "-w",
                                      "%{http_code}",
                                      f"http://{hosts[name]}:{REST_PORT}/primary"]).stdout
        if code == "200":
            return name
    return None


def _wait(condition, what: str, *logs: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {path}\n{path.read_text(errors='replace')[-2500:]}"
            for folder in logs for path in sorted(folder.rglob("*.log")))
        time.sleep(0.5)


def _lines(log: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_a_worker_carries_on_when_the_leader_cable_is_cut(network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = {name: network.add_host(name) for name in ("etcd", "db1", "db2", "app")}
    base = Path(tempfile.mkdtemp(prefix="swiftmail-cluster-pg-"))
    try:
        shutil.chown(base, "postgres", "postgres")
        network.spawn("etcd", [
            "etcd", "--name", "e", "--data-dir", str(base / "etcd"),
            "--listen-client-urls", f"http://{hosts['etcd']}:{ETCD_PORT}",
            "--advertise-client-urls", f"http://{hosts['etcd']}:{ETCD_PORT}",
            "--listen-peer-urls", f"http://{hosts['etcd']}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{hosts['etcd']}:{ETCD_PEER_PORT}",
            "--initial-cluster", f"e=http://{hosts['etcd']}:{ETCD_PEER_PORT}"],
            tmp_path / "etcd.log")
        for name in ("db1", "db2"):
            (base / f"{name}-log").mkdir()
            shutil.chown(base / f"{name}-log", "postgres", "postgres")
            conf = base / f"{name}.yml"
            conf.write_text(config(base, name, PG_PORT, REST_PORT, ETCD_PORT,
                                   address=hosts[name], etcd_address=hosts["etcd"],
                                   network="10.77.0.0/24"))
            network.spawn(name, ["patroni", str(conf)], tmp_path / f"{name}.log",
                          user="postgres")
            if name == "db1":
                _wait(lambda: _leader(network, hosts) == "db1", "db1 to lead", tmp_path, base)
        _wait(lambda: "sync_standby" in network.run_in("app", [
            "curl", "-s", "-m", "2", f"http://{hosts['db1']}:{REST_PORT}/cluster"]).stdout,
            "db2 to stream synchronously", tmp_path, base)

        url_hosts = ",".join(f"{hosts[n]}:{PG_PORT}" for n in ("db1", "db2"))
        environ = {
            "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
            "SWIFTMAIL_DATA_DIR": str(tmp_path), "SWIFTMAIL_CONFIG": str(tmp_path / "s.toml"),
            "DATABASE_URL": f"postgresql://{url_hosts}/swiftmail?target_session_attrs=read-write",
            "SWIFTMAIL_DATABASE_ADMIN_URL":
                f"postgresql://postgres@{url_hosts}/postgres?target_session_attrs=read-write",
            "SWIFTMAIL_SECRET_KEY": "cluster-test-secret-" + "x" * 32,
            "SWIFTMAIL_DB_OWNER_PASSWORD": "pw", "SWIFTMAIL_DB_APP_PASSWORD": "pw",
            "SWIFTMAIL_DB_SYSTEM_PASSWORD": "pw",
            "SWIFTMAIL_DB_DEAD_CONNECTION_SECONDS": "10",
            "SWIFTMAIL_DB_CONNECT_TIMEOUT_SECONDS": "2",
            "SWIFTMAIL_DB_FAILOVER_WAIT_SECONDS": "60",
        }
        init = network.run_in("app", [sys.executable, "-m", "swiftmail_core.cli", "init"],
                              env=environ, timeout=120)
        assert init.returncode == 0, init.stdout + init.stderr
        log = tmp_path / "probe.log"
        probe = network.spawn("app", [sys.executable, "-m", "tests.cluster.pg_probe",
                                      str(MESSAGES), str(LIMIT)], log, env=environ)
        try:
            _wait(lambda: any(line.get("ready") for line in _lines(log)), "the probe")
            time.sleep(2.0)
            network.link("db1", up=False)
            # After the interface is down: an operation begun while `ip` ran could still
            # succeed, count as recovered and put the cable back before any failover.
            cut = time.time()
            recovered = None
            while recovered is None:
                assert time.time() - cut < LIMIT, log.read_text()[-3000:]
                time.sleep(0.5)
                done = [line for line in _lines(log)
                        if "t" in line and line["t"] >= cut and line["ok"]]
                if done:
                    recovered = done[0]["t"] + done[0]["seconds"] - cut
            promoted = _leader(network, hosts)
            probe.wait(LIMIT)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait(10)
        lines = _lines(log)
        statuses = next(line["statuses"] for line in lines if "statuses" in line)
        assert promoted == "db2"
        assert statuses == {"accepted": MESSAGES}, statuses
        operations = [line for line in lines if "t" in line]
        measure("postgres_leader_cable_cut",
                seconds_to_next_write=round(recovered, 2),
                failed_operations=sum(1 for line in operations if not line["ok"]),
                errors=sorted({(line["error"] or "").split(":")[0] for line in operations
                               if not line["ok"]}))
    finally:
        network.remove()  # stop PostgreSQL before its directory goes
        shutil.rmtree(base, ignore_errors=True)
