"""A campaign and steady transactional mail through the API while every kind of host is killed.

Hosts (network namespaces on one bridge): etcd, db1 and db2 (Patroni,
synchronous), r1-r3 (Redis master, replica, three Sentinels), app (the
control host: ``swiftmail init``, the audience, the API clients, ledger
reads), lb (HAProxy with contrib/haproxy/haproxy.cfg), api1 and api2
(``swiftmail serve``), sink (an aiosmtpd sink on port 25 and the DNS server
whose MX for the campaign's domain names it), relay1 and relay2
(``swiftmail relay run``, intake on the host's address), worker1 and worker2
(``swiftmail worker``, network mode naming both intakes). Every SwiftMail
process reaches PostgreSQL through the multi-host URL and Redis through the
Sentinels.

The campaign (``SWIFTMAIL_CHAOS_RECIPIENTS``, 20,000 by default) is created
and scheduled through HAProxy; a client sends transactional mail through
HAProxy the whole time (``POST /v1/messages`` with an ``Idempotency-Key``,
retrying a failed request with the same key), counting every failed request.
While the campaign goes out, one host after another is lost, each once the
previous failure has been measured: api1 (``kill -9`` of everything on it),
worker1 (the same), relay1 (the same; started again on its spool 3 s later),
db1, the Patroni leader (cable cut and every process killed: Patroni promotes
db2), r1, the Redis master's host (``kill -9`` of its Redis server and its
Sentinel: the two other Sentinels promote r2).

Checked: every ledger row ends ``delivered`` (a hand-off whose answer was lost
when relay1 died is resent to relay1 once it is back, which drops what its
spool already had: docs/relay.md, "Relays on other hosts"); the sink saw
every campaign recipient and every transactional message that got a 202,
each once apart from the duplicates of the documented crash windows
(counted, bounded); each transactional message is one ledger row however
often its request was retried; the sink never had more connections open
than the site's ``max_connections``, nor more messages a second than its
``messages_per_second``, both shared by the two relays through Redis.
Measured (one JSON line): per kill, failed API requests, seconds to the
engine's failover, to API requests succeeding again, to the next delivery
and to the next ledger write; the whole campaign's duration.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster import netns
from tests.cluster.test_postgres_partition import ETCD_PEER_PORT, ETCD_PORT, PG_PORT, REST_PORT
from tests.cluster.test_postgres_partition import _leader as leader
from tests.cluster.test_postgres_partition import _wait as wait
from tests.cluster.test_redis_partition import SENTINEL_PORT
from tests.cluster.test_redis_partition import _start_redis as start_redis
from tests.ha.conftest import measure
from tests.ha.patroni import config
from tests.lb.processes import HAPROXY_CFG, haproxy_binary, rolling_restart_module

ROOT = Path(__file__).resolve().parents[2]
#: 20,000 recipients: tens of thousands, as the issue asks, and about 4 minutes of
#: sending with the rate cap below, which keeps `make test-cluster` near 8 minutes.
RECIPIENTS = int(os.environ.get("SWIFTMAIL_CHAOS_RECIPIENTS", "20000"))
DOMAIN = "chaos.test"
INTAKE_PORT, API_PORT, LB_PORT = 2526, 8000, 8080
#: A claimed batch's lease: long enough that no batch outlives it on a loaded machine
#: (with 15 s, hand-offs to a relay busy reloading its spool or waiting out a failover
#: did, and the batches went out twice), short enough that the killed worker's
#: batches come back well before the campaign ends.
LEASE_SECONDS, BATCH, THREADS = 60, 50, 2
SITE_CONNECTIONS = 3  # the sink site's max_connections, for both relays together
#: The sink site's messages_per_second for both relays together: below what the two
#: relays reach without it (about 100 a second), so the shared window does the limiting.
SITE_RATE = int(os.environ.get("SWIFTMAIL_CHAOS_RATE", "80"))
LIMIT = 120.0
CLIENT_STOP_SECONDS = 180.0  # its last message may be retrying (120 s at most)
FINAL_WAIT = 120.0 + RECIPIENTS / 25  # about three times the time measured
#: Share of the campaign at the sink when each host is lost, in this order.
KILLS = (("api1", 0.08), ("worker1", 0.20), ("relay1", 0.34), ("db1", 0.50), ("r1", 0.68))
#: Every row ends delivered: none is lost, not even one whose hand-off lost its answer.
FINAL = {"delivered"}
#: The workers' first retry of a deferred row (default 60 s): a row whose hand-off to the
#: killed relay lost its answer is resent to that relay this long after it is back.
RETRY_BASE_SECONDS = 5


def _start_patroni(network, hosts, base: Path, logs: Path) -> None:  # type: ignore[no-untyped-def]
    network.spawn("etcd", [
        "etcd", "--name", "e", "--data-dir", str(base / "etcd"),
        "--listen-client-urls", f"http://{hosts['etcd']}:{ETCD_PORT}",
        "--advertise-client-urls", f"http://{hosts['etcd']}:{ETCD_PORT}",
        "--listen-peer-urls", f"http://{hosts['etcd']}:{ETCD_PEER_PORT}",
        "--initial-advertise-peer-urls", f"http://{hosts['etcd']}:{ETCD_PEER_PORT}",
        "--initial-cluster", f"e=http://{hosts['etcd']}:{ETCD_PEER_PORT}"],
        logs / "etcd.log")
    for name in ("db1", "db2"):
        (base / f"{name}-log").mkdir()
        shutil.chown(base / f"{name}-log", "postgres", "postgres")
        conf = base / f"{name}.yml"
        conf.write_text(config(base, name, PG_PORT, REST_PORT, ETCD_PORT, address=hosts[name],
                               etcd_address=hosts["etcd"], network="10.77.0.0/24"))
        network.spawn(name, ["patroni", str(conf)], logs / f"{name}.log", user="postgres")
        if name == "db1":
            wait(lambda: leader(network, hosts) == "db1", "db1 to lead", logs, base)
    wait(lambda: "sync_standby" in network.run_in("app", [
        "curl", "-s", "-m", "2", f"http://{hosts['db1']}:{REST_PORT}/cluster"]).stdout,
        "db2 to stream synchronously", logs, base)


def _environ(hosts: dict[str, str], data: Path, dns_port: int) -> dict[str, str]:
    url_hosts = ",".join(f"{hosts[n]}:{PG_PORT}" for n in ("db1", "db2"))
    return {
        "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SWIFTMAIL_DATA_DIR": str(data),
        "DATABASE_URL": f"postgresql://{url_hosts}/swiftmail?target_session_attrs=read-write",
        "SWIFTMAIL_DATABASE_ADMIN_URL":
            f"postgresql://postgres@{url_hosts}/postgres?target_session_attrs=read-write",
        "SWIFTMAIL_REDIS_SENTINELS": ",".join(f"{hosts[n]}:{SENTINEL_PORT}"
                                              for n in ("r1", "r2", "r3")),
        "SWIFTMAIL_SECRET_KEY": "cluster-test-secret-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": "pw", "SWIFTMAIL_DB_APP_PASSWORD": "pw",
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": "pw",
        "SWIFTMAIL_DB_DEAD_CONNECTION_SECONDS": "10",
        "SWIFTMAIL_DB_CONNECT_TIMEOUT_SECONDS": "2",
        "SWIFTMAIL_DNS_NAMESERVERS": hosts["sink"], "SWIFTMAIL_DNS_PORT": str(dns_port),
        "SWIFTMAIL_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
        "SWIFTMAIL_WORKER_TICK_SECONDS": "2",
        "SWIFTMAIL_SEND_BATCH_SIZE": str(BATCH),
        "SWIFTMAIL_WORKER_THREADS": str(THREADS),
        "SWIFTMAIL_SEND_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS),
    }


def _relay_config(host: str, address: str, folder: Path) -> Path:
    path = folder / f"{host}.toml"
    path.write_text("\n".join([
        "[plugins.relay]", f'spool_dir = "{folder / "spool"}"',
        f'intake_listen = "{address}:{INTAKE_PORT}"', 'submission_listen = "off"',
        'allow_networks = "10.77.0.0/24"', "scan_interval = 0.2", "retry_base = 0.5",
        "retry_cap = 2.0", f'hostname = "{host}.cluster.test"', "warmup = false",
        'default_pool = "own"',
        "[plugins.relay.policies.default]", f"max_connections = {SITE_CONNECTIONS}",
        f"messages_per_second = {SITE_RATE}",
        "[plugins.relay.source_addresses]", f'own = "{address}"',
        "[plugins.relay.ip_pools]", 'own = ["own"]']) + "\n")
    return path


def _worker_config(relays: list[str], folder: Path) -> Path:
    path = folder / "worker.toml"
    path.write_text("[plugins.relay_transport]\nmode = \"network\"\nrelays = ["
                    + ", ".join(f'"{relay}"' for relay in relays) + "]\n")
    return path


def _deliveries(log: Path) -> list[tuple[float, str, str, float]]:
    """Return the sink's (time, client, recipient, MAIL time) rows."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows.append((float(parts[0]), parts[1], parts[2], float(parts[3])))
    return rows


def _requests(log: Path) -> list[dict]:  # type: ignore[type-arg]
    """Return the transactional client's request lines."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"t"')]


def _until(condition, what: str, logs: Path, seconds: float = LIMIT,  # type: ignore[no-untyped-def]
           pause: float = 0.5) -> float:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {path}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(logs.glob("*.log")) if path.name != "sink-deliveries.log")
        time.sleep(pause)
    return time.time()


def _kill_host(network: netns.Network, host: str) -> float:
    """SIGKILL every process on ``host`` (a lost host); return when."""
    when = time.time()
    netns.kill_inside(network.namespace(host))
    return when


def _rate_figures(rows: list[tuple[float, str, str, float]]) -> dict[str, int]:
    """Messages per second at the sink by MAIL time: peak, seconds over the cap, 10 s peak."""
    per_second = collections.Counter(int(began) for _, _, _, began in rows)
    per_ten = collections.Counter(int(began) // 10 for _, _, _, began in rows)
    return {"sink_peak_messages_per_second": max(per_second.values()),
            "sink_seconds_over_rate_cap": sum(1 for n in per_second.values() if n > SITE_RATE),
            "sink_peak_messages_per_10_seconds": max(per_ten.values())}


def _repeats(rows: list[tuple[float, str, str, float]], names: dict[str, str],
             began: float) -> list[dict[str, object]]:
    """Each delivery after a recipient's first: when and by whom, beside the first one."""
    first: dict[str, tuple[float, str]] = {}
    repeats: list[dict[str, object]] = []
    for delivered_at, client, recipient, _ in sorted(rows):
        if recipient not in first:
            first[recipient] = (delivered_at, client)
            continue
        first_at, first_client = first[recipient]
        repeats.append({"recipient": recipient,
                        "first": [names.get(first_client, first_client),
                                  round(first_at - began, 1)],
                        "again": [names.get(client, client), round(delivered_at - began, 1)]})
    return repeats


def _peak_by_relay(rows: list[tuple[float, str, str, float]]) -> dict[str, int]:
    """Each relay's own peak messages per second at the sink."""
    peaks: dict[str, int] = {}
    for (client, _), count in collections.Counter(
            (client, int(began)) for _, client, _, began in rows).items():
        peaks[client] = max(peaks.get(client, 0), count)
    return peaks


@pytest.mark.timeout(1320)  # setup and 20,000 recipients took about 1,100 s at load 28
def test_a_campaign_and_transactional_mail_survive_killed_hosts(network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    binary = haproxy_binary()
    assert binary, "haproxy is not installed (bash .ci/system-packages installs it)"
    hosts = start_redis(network, tmp_path)
    for name in ("etcd", "db1", "db2", "sink", "relay1", "relay2", "worker1", "worker2",
                 "api1", "api2", "lb"):
        hosts[name] = network.add_host(name)
    base = Path(tempfile.mkdtemp(prefix="swiftmail-cluster-chaos-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        shutil.chown(base, "postgres", "postgres")
        deliveries = tmp_path / "sink-deliveries.log"
        sink_out = tmp_path / "sink.log"
        network.spawn("sink", [sys.executable, "-m", "tests.cluster.sink_host", hosts["sink"],
                               DOMAIN, str(deliveries)], sink_out,
                      env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
        _until(lambda: "dns_port" in sink_out.read_text(), "the sink host", tmp_path)
        dns_port = json.loads(next(line for line in sink_out.read_text().splitlines()
                                   if "dns_port" in line))["dns_port"]
        _start_patroni(network, hosts, base, tmp_path)

        app = tmp_path / "app"
        app.mkdir()
        control = {**_environ(hosts, app, dns_port), "SWIFTMAIL_CONFIG": str(app / "s.toml")}
        init = network.run_in("app", [sys.executable, "-m", "swiftmail_core.cli", "init"],
                              env=control, timeout=180)
        assert init.returncode == 0, init.stdout + init.stderr

        def start(host: str, argv: list[str], conf: Path, data: Path) -> None:
            processes[host] = network.spawn(
                host, [sys.executable, "-m", "swiftmail_core.cli", *argv],
                tmp_path / f"{host}.log",
                env={**_environ(hosts, data, dns_port), "SWIFTMAIL_CONFIG": str(conf)})

        def listening(host: str, port: int) -> bool:
            return network.run_in("app", [
                "bash", "-c", f"exec 3<>/dev/tcp/{hosts[host]}/{port}"]).returncode == 0

        for host in ("api1", "api2"):
            folder = tmp_path / host
            folder.mkdir()
            (folder / "api.toml").write_text("")
            start(host, ["serve", "--bind", f"{hosts[host]}:{API_PORT}", "--workers", "2",
                         "--threads", "2"], folder / "api.toml", folder)
        relay_conf = {}
        for host in ("relay1", "relay2"):
            folder = tmp_path / host
            folder.mkdir()
            relay_conf[host] = _relay_config(host, hosts[host], folder)
            start(host, ["relay", "run"], relay_conf[host], folder)
        socket_path = str(tmp_path / "haproxy.sock")
        network.spawn("lb", [binary, "-db", "-f", str(HAPROXY_CFG)], tmp_path / "lb.log", env={
            "PATH": os.environ["PATH"], "SWIFTMAIL_LB_BIND": f"{hosts['lb']}:{LB_PORT}",
            "SWIFTMAIL_LB_SOCKET": socket_path,
            "SWIFTMAIL_API1": f"{hosts['api1']}:{API_PORT}",
            "SWIFTMAIL_API2": f"{hosts['api2']}:{API_PORT}"})
        for host in ("relay1", "relay2"):
            _until(lambda host=host: listening(host, INTAKE_PORT), f"{host}'s intake", tmp_path)
        intakes = [f"{hosts[h]}:{INTAKE_PORT}" for h in ("relay1", "relay2")]
        for host in ("worker1", "worker2"):
            folder = tmp_path / host
            folder.mkdir()
            start(host, ["worker"], _worker_config(intakes, folder), folder)
        haproxy = rolling_restart_module()

        def server_status(server: str) -> str:
            try:
                return haproxy.server_stats(socket_path)[("swiftmail_api", server)]["status"]
            except OSError:
                return ""

        _until(lambda: all(server_status(s) == "UP" for s in ("api1", "api2")),
               "HAProxy to see both API hosts UP", tmp_path, seconds=180)

        created = network.run_in("app", [sys.executable, "-m", "tests.cluster.campaign_child",
                                         "create", str(RECIPIENTS), DOMAIN],
                                 env=control, timeout=300)
        assert created.returncode == 0, created.stdout + created.stderr
        ids = json.loads(created.stdout.strip().splitlines()[-1])
        lb = f"{hosts['lb']}:{LB_PORT}"
        client_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
        requests_log, stop_file = tmp_path / "transactional.jsonl", tmp_path / "stop-client"
        processes["client"] = network.spawn(
            "app", [sys.executable, "-m", "tests.cluster.api_client", "transactional", lb,
                    ids["key"], DOMAIN, str(stop_file), str(FINAL_WAIT + 600)],
            requests_log, env=client_env)
        _until(lambda: sum(r["ok"] for r in _requests(requests_log)) >= 5,
               "the first transactional messages", tmp_path)
        scheduled = network.run_in("app", [sys.executable, "-m", "tests.cluster.api_client",
                                           "campaign", lb, ids["key"], ids["list"]],
                                   env=client_env, timeout=300)
        assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
        ids["campaign"] = json.loads(scheduled.stdout.strip().splitlines()[-1])["campaign"]
        began = time.time()

        url_hosts = ",".join(f"{hosts[n]}:{PG_PORT}" for n in ("db1", "db2"))
        database = f"postgresql://postgres@{url_hosts}/swiftmail?target_session_attrs=read-write"

        def ledger(query: str) -> list[list[str]]:
            answer = network.run_in("app", ["psql", database, "-Atc", query], timeout=60,
                                    env={"PATH": os.environ["PATH"], "PGCONNECT_TIMEOUT": "3"})
            assert answer.returncode == 0, answer.stderr
            return [line.split("|") for line in answer.stdout.splitlines() if line]

        def counts(where: str) -> dict[str, int]:
            return {status: int(count) for status, count in ledger(
                f"SELECT status, count(*) FROM messages WHERE tenant_id = '{ids['tenant']}' "
                f"AND {where} GROUP BY status")}

        campaign_rows = f"campaign_id = '{ids['campaign']}'"
        transactional_rows = "campaign_id IS NULL"

        def delivered_now() -> int:
            try:
                return counts("true").get("delivered", 0)
            except (AssertionError, subprocess.TimeoutExpired):
                return -1  # no primary just now

        def sentinel_master() -> str:
            answer = network.run_in("app", ["redis-cli", "-h", hosts["r3"], "-p",
                                            str(SENTINEL_PORT), "sentinel",
                                            "get-master-addr-by-name", "swiftmail"]).stdout
            return answer.split()[0] if answer.split() else ""

        # Each host is lost once the campaign is that far along; the step after the
        # kill waits for the failover it causes, so each is measured on its own.
        failover: dict[str, Callable[[], bool]] = {
            "api1": lambda: server_status("api1").startswith("DOWN"),
            "db1": lambda: leader(network, hosts) == "db2",
            "r1": lambda: sentinel_master() == hosts["r2"],
        }
        kills: list[dict[str, object]] = []
        relay_back = 0.0
        for host, share in KILLS:
            _until(lambda share=share: len(_deliveries(deliveries)) >= RECIPIENTS * share,
                   f"{share:.0%} of the campaign at the sink", tmp_path, seconds=FINAL_WAIT)
            written_before = delivered_now()
            if host == "db1":
                network.link("db1", up=False)  # a lost host: its connections go silent
            killed = _kill_host(network, host)
            record: dict[str, object] = {"host": host, "t": killed}
            if host in failover:
                record["failover_seconds"] = round(
                    _until(failover[host], f"the failover after {host} was lost", tmp_path,
                           pause=0.2) - killed, 1)
            if host == "relay1":
                time.sleep(3.0)  # the host is down a while; workers hand off to relay2 alone
                relay_back = time.time()
                start("relay1", ["relay", "run"], relay_conf["relay1"], tmp_path / "relay1")
            record["ledger_write_seconds"] = round(_until(
                lambda before=written_before: delivered_now() > before,
                f"a ledger write after {host} was lost", tmp_path, pause=0.5) - killed, 1)
            kills.append(record)

        _until(lambda: set(counts(campaign_rows)) <= FINAL, "every campaign row final",
               tmp_path, seconds=FINAL_WAIT, pause=2.0)
        finished = time.time()
        stop_file.touch()
        processes["client"].wait(CLIENT_STOP_SECONDS)
        _until(lambda: set(counts(transactional_rows)) <= FINAL,
               "every transactional row final", tmp_path, pause=2.0)
        time.sleep(2.0)  # a late duplicate would show itself

        final = counts(campaign_rows)
        final_transactional = counts(transactional_rows)
        rows = _deliveries(deliveries)
        requests = _requests(requests_log)
        per_recipient = collections.Counter(recipient for _, _, recipient, _ in rows)
        expected = {f"user{i}@{DOMAIN}" for i in range(RECIPIENTS)}
        accepted = {r["n"]: r["id"] for r in requests if r["ok"]}
        sent_transactional = {f"tx{n}@{DOMAIN}" for n in accepted}
        (resent_to_same_relay,), = ledger(
            f"SELECT count(*) FROM messages WHERE tenant_id = '{ids['tenant']}' "
            "AND resend_to IS NOT NULL")
        duplicates = sum(count - 1 for count in per_recipient.values())
        twice = sorted(recipient for recipient, count in per_recipient.items() if count > 1)
        # Claimed twice: a worker sent it again (its first worker died, or its lease ran
        # out); claimed once: a relay sent it again (it died after the remote 250).
        reclaimed = {email for email, in ledger(
            f"SELECT lower(email) FROM messages WHERE tenant_id = '{ids['tenant']}' "
            f"AND attempts > 1 AND lower(email) = ANY('{{{','.join(twice)}}}'::text[])")
        } if twice else set()
        claimed_twice = len(reclaimed)
        # Each repeat's cause: its row claimed again (a worker), or relay1 delivered it
        # before it was killed and again from its spool after its restart (it died between
        # the remote 250 and the outcome write, the window the architecture allows; such a
        # repeat may come minutes later, behind the site's rate cap, so it is counted in a
        # later host's window below). Anything else is a duplicate nothing explains.
        repeats = _repeats(rows, {address: name for name, address in hosts.items()}, began)
        for repeat in repeats:
            first_host, first_at = repeat["first"]  # type: ignore[misc]
            again_host, again_at = repeat["again"]  # type: ignore[misc]
            if repeat["recipient"] in reclaimed:
                repeat["cause"] = "claimed again"
            elif (first_host == again_host == "relay1"
                  and first_at < relay_back - began <= again_at):  # type: ignore[operator]
                repeat["cause"] = "relay killed after the remote 250"
            else:
                repeat["cause"] = "unexplained"

        assert sum(final.values()) == RECIPIENTS and set(final) <= FINAL, final
        # One ledger row per message that got a 202, however often its request was sent.
        assert sum(final_transactional.values()) == len(accepted), (final_transactional,
                                                                    len(accepted))
        assert set(final_transactional) <= FINAL, final_transactional
        assert set(per_recipient) == expected | sent_transactional
        # At-least-once: a killed worker's lease resends at most its in-flight batches, a
        # killed relay at most the messages it had delivered but not yet recorded.
        assert duplicates <= THREADS * BATCH * 2, duplicates
        assert all(r["cause"] != "unexplained" for r in repeats), repeats
        # The site's connection cap is shared through Redis: it holds across both relays,
        # through a relay's death (its slots stay leased) and its restart.
        peak = max(int(line) for line in deliveries.with_suffix(".peak").read_text().split())
        assert peak <= SITE_CONNECTIONS, peak
        # So is its rate: a one-second window shared by both relays. A message admitted
        # late in one second may reach the sink early in the next, so one second may show
        # up to twice the cap, ten whole seconds at most eleven times it.
        rates = _rate_figures(rows)
        assert rates["sink_peak_messages_per_second"] <= 2 * SITE_RATE, rates
        assert rates["sink_peak_messages_per_10_seconds"] <= 11 * SITE_RATE, rates

        def next_delivery(after: float, source: str | None = None) -> float:
            return round(min(t for t, client, _, _ in rows
                             if t > after and (source is None or client == source)) - after, 2)

        ends = [float(k["t"]) for k in kills[1:]] + [finished]  # type: ignore[arg-type]
        seen: set[str] = set()
        repeated_at = []  # when each delivery after a recipient's first arrived
        for delivered_at, _, recipient, _ in sorted(rows):
            if recipient in seen:
                repeated_at.append(delivered_at)
            seen.add(recipient)
        for record, end in zip(kills, ends, strict=True):
            killed = float(record.pop("t"))  # type: ignore[arg-type]
            # A request belongs to the window in which its answer came.
            window = [r for r in requests if killed <= r["t"] + r["seconds"] < end]
            failed = [r for r in window if not r["ok"]]
            last_failure = max((r["t"] + r["seconds"] for r in failed), default=killed)
            ok_after = min((r["t"] + r["seconds"] for r in window
                            if r["ok"] and r["t"] >= last_failure), default=end)
            record.update(
                api_requests=len(window), api_failed_requests=len(failed),
                api_errors=sorted({str(r["status"] or r["error"]).split(":")[0]
                                   for r in failed}),
                api_seconds_to_service=round(ok_after - killed, 1) if failed else 0.0,
                api_slowest_request_seconds=max((r["seconds"] for r in window), default=0.0),
                duplicates=sum(1 for t in repeated_at if killed <= t < end),
                next_delivery_seconds=next_delivery(killed))
            # Full service: the engine failed over, API requests succeed, mail reaches the
            # sink and outcomes reach the ledger again.
            record["full_service_seconds"] = max(
                float(record.get(figure, 0.0))  # type: ignore[arg-type]
                for figure in ("failover_seconds", "api_seconds_to_service",
                               "next_delivery_seconds", "ledger_write_seconds"))
            if record["host"] == "relay1":
                record["restart_to_delivering_seconds"] = next_delivery(relay_back,
                                                                        hosts["relay1"])
                record["seconds_to_all_final"] = round(finished - killed, 1)
            if record["host"] == "worker1":
                record["seconds_to_all_final"] = round(finished - killed, 1)

        transactional_per = [per_recipient[r] for r in sent_transactional]
        measure("campaign_and_api_under_kills",
                recipients=RECIPIENTS,
                ledger=final,
                transactional_ledger=final_transactional,
                transactional_messages=len(accepted),
                transactional_delivered_once=sum(1 for n in transactional_per if n == 1),
                api_requests=len(requests),
                api_failed_requests=sum(1 for r in requests if not r["ok"]),
                handoff_answer_lost_resent_to_same_relay=int(resent_to_same_relay),
                sink_deliveries=len(rows),
                duplicates=duplicates,
                recipients_delivered_twice=len(twice),
                recipients_delivered_twice_claimed_twice=claimed_twice,
                duplicates_by_cause=dict(collections.Counter(r["cause"] for r in repeats)),
                repeats=repeats[:30],
                campaign_seconds=round(finished - began, 1),
                kills=kills,
                send_lease_seconds=LEASE_SECONDS,
                site_max_connections=SITE_CONNECTIONS,
                sink_peak_connections=peak,
                site_messages_per_second=SITE_RATE,
                sink_peak_messages_per_second_by_relay=_peak_by_relay(rows),
                **rates)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        network.remove()
        shutil.rmtree(base, ignore_errors=True)
