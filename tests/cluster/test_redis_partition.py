"""Cut the Redis master's cable: Sentinel fails over, SwiftMail's clients follow.

Four hosts (network namespaces): r1 (master and a Sentinel), r2 (replica
and a Sentinel), r3 (a Sentinel), app (a client using ``redis_clients`` as
the worker and limiters do). Unlike ``kill -9`` on loopback, an interface
taken down answers nothing: the client's open connection is silent, so it
is the socket timeout, not a reset, that makes it reconnect through the
Sentinels. Then the cable goes back in: the old master must rejoin as a
replica and the clients must keep writing to the new master. Measured
(printed): seconds from the cut to the clients working, failed operations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.ha.conftest import measure

REDIS_PORT, SENTINEL_PORT = 6379, 26379
LIMIT = 60.0


def _start_redis(network, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    hosts = {name: network.add_host(name) for name in ("r1", "r2", "r3", "app")}
    master = hosts["r1"]
    for name in ("r1", "r2"):
        folder = tmp_path / name
        folder.mkdir()
        extra = [] if name == "r1" else ["--replicaof", master, str(REDIS_PORT)]
        network.spawn(name, ["redis-server", "--bind", hosts[name], "--port", str(REDIS_PORT),
                             "--protected-mode", "no", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), *extra], tmp_path / f"{name}.log")
    time.sleep(0.5)
    for name in ("r1", "r2", "r3"):
        conf = tmp_path / f"sentinel-{name}.conf"
        conf.write_text(
            f"port {SENTINEL_PORT}\nbind {hosts[name]}\nprotected-mode no\ndir {tmp_path}\n"
            f"sentinel monitor swiftmail {master} {REDIS_PORT} 2\n"
            "sentinel down-after-milliseconds swiftmail 1000\n"
            "sentinel failover-timeout swiftmail 10000\n")
        network.spawn(name, ["redis-sentinel", str(conf)], tmp_path / f"sentinel-{name}.log")
    deadline = time.monotonic() + LIMIT
    while True:
        answer = network.run_in("app", ["redis-cli", "-h", hosts["r3"], "-p",
                                        str(SENTINEL_PORT), "sentinel", "sentinels",
                                        "swiftmail"]).stdout
        replicas = network.run_in("app", ["redis-cli", "-h", hosts["r3"], "-p",
                                          str(SENTINEL_PORT), "sentinel", "replicas",
                                          "swiftmail"]).stdout
        if answer.count("runid") == 2 and replicas.count("runid") == 1:
            return hosts
        assert time.monotonic() < deadline, "Sentinels did not find each other"
        time.sleep(0.3)


def _lines(log: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"t"')]


def _role(network, host: str) -> str:  # type: ignore[no-untyped-def]
    lines = network.run_in("app", ["redis-cli", "-h", host, "-p", str(REDIS_PORT), "role"]
                           ).stdout.split()
    return lines[0] if lines else ""


def test_clients_follow_a_failover_after_the_master_cable_is_cut(network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = _start_redis(network, tmp_path)
    sentinels = ",".join(f"{hosts[n]}:{SENTINEL_PORT}" for n in ("r1", "r2", "r3"))
    log = tmp_path / "probe.log"
    root = Path(__file__).resolve().parents[2]
    probe = network.spawn("app", [sys.executable, "-m", "tests.cluster.probe", sentinels,
                                  str(LIMIT)], log, env={"PYTHONPATH": str(root)})
    try:
        time.sleep(3.0)
        network.link("r1", up=False)
        # After the interface is down: an operation begun while `ip` ran could still
        # succeed, count as recovered and put the cable back before any failover.
        cut = time.time()
        recovered = None
        while recovered is None:
            assert time.time() - cut < LIMIT, "\n".join(
                line for line in log.read_text().splitlines() if not line.startswith('{"t"'))
            time.sleep(0.5)
            lines = _lines(log)
            # Every operation begun after the cut first meets the silent master.
            done = [line for line in lines if line["t"] >= cut and line["ok"]]
            if done:
                recovered = done[0]["t"] + done[0]["seconds"] - cut
        network.link("r1", up=True)
        rejoined = time.time()
        deadline = time.monotonic() + LIMIT
        while _role(network, hosts["r1"]) != "slave":
            assert time.monotonic() < deadline, "the old master did not rejoin as a replica"
            time.sleep(0.5)
        time.sleep(3.0)  # clients keep writing while the old master is back
    finally:
        probe.kill()
        probe.wait(10)
    lines = _lines(log)
    assert _role(network, hosts["r2"]) == "master"
    settled = [line for line in lines if line["t"] > rejoined + 1.0]
    assert settled and all(line["ok"] for line in settled), settled[-5:]
    measure("redis_master_cable_cut",
            seconds_to_recover=round(recovered, 2),
            failed_operations=sum(1 for line in lines if not line["ok"]),
            slowest_operation_seconds=max(line["seconds"] for line in lines),
            errors=sorted({(line["error"] or "").split(":")[0] for line in lines
                           if not line["ok"]}))
