"""Benchmark: campaign subscribers per hour, "campaign starts" to "accepted by smtp-sink".

Scratch SwiftMail database on the local PostgreSQL (``init`` path; dropped
at the end); one tenant with a verified sending domain and an RSA-2048 DKIM
key; ``--subscribers`` contacts on a list; a ~20 KB personalised HTML
campaign with tracking on (10 distinct tracked links used 102 times,
open pixel, unsubscribe headers; first name and city in 23 places). Mail goes worker -> relay transport (durable spool hand-off,
DKIM-signed in the worker) -> the relay (its own process) -> Postfix
``smtp-sink`` over loopback, MX from a loopback DNS server.

The relay child records every outcome in the ledger as ``swiftmail relay
run`` does (``OutcomeSink`` -> ``sending/state.py``); a phase ends when the
relay has stopped with its outcomes written, and every message of the
campaign must then be ``delivered`` in the ledger.

Measured in the same run:

* ``profile_us``: per message, in one process: render, DKIM sign, spool
  write (batches of 100), and the outbox claim + result write per message;
* ``relay_only_per_s``: the relay delivering that campaign's already
  spooled messages (workers done before the relay starts);
* ``cpu_ms_per_message``: per phase, the CPU time of its worker and relay
  processes per message (load-independent, unlike the rates; PostgreSQL's
  share not included);
* ``end_to_end_per_s``: a second campaign, workers and relay together,
  from ``schedule`` to the last 250 at the sink and its outcome in the
  ledger; ``ratio_vs_relay_only`` (the issue #16 target: 0.8), the ratio
  of the two medians, and ``ratio_per_round`` with its median
  ``ratio_median_of_rounds``: each round's end to end against the relay
  only run just before it (on a machine whose speed drifts between rounds,
  the same-round ratio is the fairer comparison).

Prints ONE JSON line (medians over --rounds, the 1-minute load average as
each round ended). A run that does not deliver every message (sink and
ledger) exits 1 and names what is missing instead of printing a rate:
a worker or the relay exits non-zero, the campaign is not sent within
``--timeout``, or the relay delivers nothing new for ``--stall-seconds`` (the
relay child then lists the stranded messages on stderr and in the line).
``--inject-failure kill-relay`` kills the end-to-end relay mid-run (the
smoke test checks that this exits non-zero).

    .venv/bin/python bench/campaign_throughput.py --subscribers 20000 --workers 2 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BackendCpu,
    Unfinished,
    arguments,
    drop_database,
    environment,
    free_port,
    initialise_scratch,
    median,
    per_second,
    process_cpu,
    ratio,
    run,
    start_sink,
    stop,
)

RECIPIENT_DOMAIN = "sink.bench.example"
SENDER_DOMAIN = "news.bench.example"


def campaign_html(size: int = 20 * 1024) -> str:
    """Return a ~20 KB HTML template: 10 links, personalised in 23 places."""
    parts = ["<html><head><style>p { color: #333333; font-family: Arial; }</style></head><body>",
             "<h1>Hello {{ contact.first_name }}!</h1>"]
    index = 0
    while sum(len(p) for p in parts) < size:
        greeting = ("{{ contact.first_name }} from {{ contact.city }}: " if index % 10 == 0
                    else "")
        parts.append(
            f"<p>{greeting}Paragraph {index} of our weekly news, with enough words to look like "
            "a real newsletter body text, about products, events and offers near you. "
            f'<a href="https://shop.example/item/{index % 10}">Read more</a></p>')
        index += 1
    parts.append("</body></html>")
    return "\n".join(parts)


def setup(subscribers: int) -> tuple[uuid.UUID, uuid.UUID]:
    """Create the tenant, sending domain, contacts and list; return (tenant, list)."""
    from swiftmail_relay import dkim

    from swiftmail_core import crypto
    from swiftmail_core.db import system_tx, tenant_tx
    from swiftmail_core.settings import load_settings
    from swiftmail_core.tenants import create_tenant

    settings = load_settings()
    tenant_id = uuid.UUID(str(create_tenant(f"bench-{uuid.uuid4().hex[:8]}").id))
    pem, public = dkim.generate_rsa_pem()
    list_id = uuid.uuid4()
    with system_tx() as database:
        database.execute_sql(
            "UPDATE tenants SET send_rate_per_second = 1000000, daily_quota = 100000000 "
            "WHERE id = %s", (str(tenant_id),))
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO sending_domains (tenant_id, domain, dkim_selector, "
            "dkim_private_key_encrypted, dkim_public_key, verified_at) "
            "VALUES (%s, %s, 'sm1', %s, %s, now())",
            (str(tenant_id), SENDER_DOMAIN, crypto.encrypt(settings.secret_key, pem), public))
        database.execute_sql("INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, 'Bench')",
                             (str(tenant_id), str(list_id)))
        database.execute_sql(
            "INSERT INTO contacts (tenant_id, email, name, attributes) "
            "SELECT %s, 'user' || i || '@' || %s, 'User ' || i, "
            "jsonb_build_object('first_name', 'Reader' || i, 'city', 'City' || (i %% 50)) "
            "FROM generate_series(0, %s - 1) AS i", (str(tenant_id), RECIPIENT_DOMAIN, subscribers))
        database.execute_sql(
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
            "SELECT %s, %s, id, 'confirmed' FROM contacts", (str(tenant_id), str(list_id)))
    return tenant_id, list_id


def new_campaign(tenant_id: uuid.UUID, list_id: uuid.UUID) -> uuid.UUID:
    """Create a draft campaign through the relay transport."""
    from swiftmail_core.db import tenant_tx

    campaign_id = uuid.uuid4()
    with tenant_tx(tenant_id) as database:
        domain_id = database.execute_sql("SELECT id FROM sending_domains").fetchone()[0]
        database.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, from_name, "
            "transport, list_ids, sending_domain_id) VALUES (%s, %s, 'Bench', "
            "'News for {{ contact.first_name }}', %s, %s, 'Bench News', 'relay', %s::uuid[], %s)",
            (str(tenant_id), str(campaign_id), campaign_html(), f"news@{SENDER_DOMAIN}",
             [str(list_id)], str(domain_id)))
    return campaign_id


def child_worker() -> None:
    """Send until nothing is claimable and every campaign is finished."""
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.sending import sweeper
    from swiftmail_core.sending.worker import SendingWorker
    from swiftmail_core.settings import load_settings
    from swiftmail_core.startup_gc import freeze_startup_objects

    runtime = start(load_settings(), process=ProcessKind.BENCH)
    worker = SendingWorker(runtime.settings, runtime.plugins)
    freeze_startup_objects()  # as `swiftmail worker` does
    ready_and_wait()
    idle_since = None
    while True:
        if worker.process_batch():
            idle_since = None
            continue
        sweeper.tick(runtime.settings, runtime.plugins)
        if not sweeper.has_due_work():
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:
                return
        time.sleep(0.02)


def stranded(relay: Any, limit: int = 20) -> dict[str, Any]:
    """Describe the messages still in the relay's spool: where each one waits."""
    ready = {queue_id for queue_id, _ in list(relay._ready._queue)}
    timed = {queue_id for _, _, queue_id, _ in relay._timers}
    inflight = {queue_id for queue_id, _ in relay._inflight}
    entries = []
    for queue_id in relay.spool.scan():
        try:
            envelope = relay.spool.read_envelope(queue_id)
        except (OSError, ValueError) as ex:
            entries.append({"queue_id": queue_id, "unreadable": str(ex)})
            continue
        entries.append({
            "queue_id": queue_id,
            "state_file": (relay.spool.queue / f"{queue_id}.state").exists(),
            "attempts": [r.attempts for r in envelope.recipients],
            "status": [r.status for r in envelope.recipients],
            "next_attempt_in_s": [round(r.next_attempt_at - time.time(), 1)
                                  for r in envelope.pending],
            "last_reply": [r.last_reply for r in envelope.recipients if r.last_reply],
            "loaded": queue_id in relay.envelopes, "ready": queue_id in ready,
            "timer": queue_id in timed, "in_flight": queue_id in inflight,
        })
    return {"count": len(entries), "first": entries[:limit]}


def child_relay(expected: int, campaign_id: str) -> None:
    """Run the relay until ``expected`` ledger rows of ``campaign_id`` are delivered; print one JSON line.

    Rows of another campaign belong to an earlier phase: a copy of one
    left in the spool is delivered but counted apart (``stale_deliveries``),
    never as this phase's. Exits 1, describing the stranded messages, when
    nothing new is delivered for BENCH_STALL_SECONDS.
    """
    import asyncio
    import functools

    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.engine import Relay
    from swiftmail_relay.outcomes import record_outcomes
    from swiftmail_relay.sink import OutcomeSink

    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings
    from swiftmail_core.startup_gc import freeze_startup_objects

    runtime = start(load_settings(), process=ProcessKind.RELAY)
    settings = runtime.settings
    config = RelayConfig.from_settings(
        settings, smtp_port=int(os.environ["BENCH_SINK_PORT"]), allow_networks="127.0.0.0/8",
        max_connections_per_site=20, messages_per_connection=1000,
        scan_interval=float(os.environ.get("BENCH_SCAN_INTERVAL", "0.1")),
        hostname="bench.relay.test", warmup=False)
    stall_seconds = float(os.environ.get("BENCH_STALL_SECONDS", "120"))
    freeze_startup_objects()  # as `swiftmail relay run` does
    ready_and_wait()

    async def deliver() -> dict[str, Any]:
        # As `swiftmail relay run`: every outcome goes to the ledger (sending/state.py).
        rows: set[int] = set()  # this phase's ledger rows delivered (a copy delivered twice counts once)
        copies, stale = [0], [0]
        stale_examples: list[Any] = []

        def final(envelope: Any) -> None:
            for recipient in envelope.recipients:
                if recipient.status != "delivered":
                    continue
                if recipient.ledger_id is None or envelope.campaign_id != campaign_id:
                    stale[0] += 1
                    if len(stale_examples) < 5:
                        stale_examples.append([recipient.ledger_id, envelope.campaign_id,
                                               envelope.id, envelope.source])
                    continue
                copies[0] += 1
                rows.add(recipient.ledger_id)

        relay = Relay(settings, config, sink=OutcomeSink(
            functools.partial(record_outcomes, plugins=runtime.plugins)), on_final=final)
        started = time.perf_counter()
        await relay.start()
        progress, progress_at = relay.delivered, time.monotonic()
        while len(rows) < expected:
            await asyncio.sleep(0.01)
            if relay.delivered != progress:
                progress, progress_at = relay.delivered, time.monotonic()
            elif time.monotonic() - progress_at > stall_seconds:
                return {"delivered": len(rows), "expected": expected,
                        "stalled_s": stall_seconds, "stranded": stranded(relay)}
        result: dict[str, Any] = {"delivered": len(rows), "expected": expected,
                                  "duplicate_deliveries": copies[0] - len(rows),
                                  "stale_deliveries": stale[0], "stale_examples": stale_examples}
        stopping = time.perf_counter()
        try:
            # Stopping writes the last outcomes: the phase ends when the ledger has them all.
            await asyncio.wait_for(relay.stop(), 60)
        except TimeoutError:
            result["stop_hung"] = [repr(task) for task in asyncio.all_tasks()
                                   if task is not asyncio.current_task()][:20]
        result["seconds"] = time.perf_counter() - started
        result["stop_s"] = round(time.perf_counter() - stopping, 2)
        return result

    result = asyncio.run(deliver())
    print(json.dumps(result), flush=True)
    if result.get("stranded"):
        print(json.dumps(result["stranded"], indent=1), file=sys.stderr)
    os._exit(0 if result["delivered"] >= expected else 1)


def ready_and_wait() -> None:
    """In a child: say it has started (imports, set-up done), then wait for the go."""
    (Path(os.environ["BENCH_READY_DIR"]) / str(os.getpid())).touch()
    sys.stdin.read(1)


def spawn(mode: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """Start a child of this script (the relay's stdout is read, a worker's discarded).

    The child starts (Python, imports, its runtime) and waits for ``go``: a
    phase's clock measures running processes, as in production, where the
    relay and the workers are up before a campaign starts; the relay-only
    phase's clock never included the relay's process start either.
    """
    return subprocess.Popen([sys.executable, __file__, "--child", mode, *extra],
                            env={**os.environ, **env}, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE if mode == "relay" else sys.stderr)


def await_ready(children: list[subprocess.Popen[str]], timeout: float = 120.0) -> None:
    """Wait until every child has started; raise Unfinished if one exits or hangs first."""
    ready = Path(os.environ["BENCH_READY_DIR"])
    deadline = time.monotonic() + timeout
    while not all((ready / str(child.pid)).exists() for child in children):
        if any(child.poll() is not None for child in children) or time.monotonic() > deadline:
            for child in children:
                stop(child)
            raise Unfinished("a worker or relay process did not start")
        time.sleep(0.01)


def go(children: list[subprocess.Popen[str]]) -> None:
    """Let started children run."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write("g")
        child.stdin.flush()  # not closed: ``communicate`` flushes it later


def wait_sent(tenant_id: uuid.UUID, campaign_id: uuid.UUID, timeout: float) -> None:
    """Wait until the campaign is sent; raise Unfinished after ``timeout`` seconds."""
    from swiftmail_core.db import tenant_tx

    deadline = time.monotonic() + timeout
    while True:
        with tenant_tx(tenant_id) as database:
            status = database.execute_sql("SELECT status FROM campaigns WHERE id = %s",
                                          (str(campaign_id),)).fetchone()[0]
            counts = dict(database.execute_sql(
                "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY 1",
                (str(campaign_id),)).fetchall())
        if status == "sent":
            return
        if time.monotonic() > deadline:
            raise Unfinished(f"campaign {status} after {timeout:.0f} s, messages {counts}")
        time.sleep(0.1)


def children_cpu() -> float:
    """Return the CPU seconds (user + system) of this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_final(tenant_id: uuid.UUID, campaign_id: uuid.UUID, expected: int, phase: str) -> None:
    """Raise Unfinished unless every message of the campaign is delivered in the ledger.

    The error names the phase and the first rows that are not delivered.
    """
    from swiftmail_core.db import tenant_tx

    with tenant_tx(tenant_id) as database:
        counts = dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY 1",
            (str(campaign_id),)).fetchall())
        if counts.get("delivered", 0) != expected or len(counts) != 1:
            stuck = database.execute_sql(
                "SELECT id, status, attempts, lease_owner IS NOT NULL FROM messages "
                "WHERE campaign_id = %s AND status <> 'delivered' ORDER BY id LIMIT 10",
                (str(campaign_id),)).fetchall()
            raise Unfinished(f"{phase}: not every message is final: ledger {counts}, {expected} "
                             f"expected delivered; first (id, status, attempts, leased): {stuck}")


def finish_workers(workers: list[subprocess.Popen[str]], timeout: float) -> None:
    """Wait for the worker processes; raise Unfinished when one fails or hangs."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in workers:
                stop(other)
            raise Unfinished(f"a worker was still running after {timeout:.0f} s") from None
    codes = [worker.returncode for worker in workers]
    if any(codes):
        raise Unfinished(f"workers exited with {codes}")


def relay_seconds(relay: subprocess.Popen[str], expected: int, timeout: float,
                  kill_after: float | None = None) -> float:
    """Wait for a relay child; return its delivery seconds, or raise Unfinished.

    ``kill_after`` (the injected failure) SIGKILLs it that many seconds in.
    """
    if kill_after is not None:
        time.sleep(kill_after)
        relay.send_signal(signal.SIGKILL)
    try:
        out, _ = relay.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(relay)
        raise Unfinished(f"the relay was still delivering after {timeout:.0f} s") from None
    lines = out.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    if relay.returncode != 0 or report.get("delivered", 0) < expected:
        detail = (f", {report['stranded']['count']} messages stranded in the spool "
                  f"(first: {report['stranded']['first'][:3]})" if report.get("stranded") else "")
        raise Unfinished(f"the relay exited with {relay.returncode} having delivered "
                         f"{report.get('delivered', 'an unknown number')} of {expected}{detail}")
    if report.get("stop_hung"):
        print(f"relay stop hung: {report['stop_hung']}", file=sys.stderr)
    DUPLICATES.append(report.get("duplicate_deliveries", 0))
    STALE.append(report.get("stale_deliveries", 0))
    if report.get("stale_examples"):
        print(f"stale deliveries (ledger id, campaign, queue id, source): {report['stale_examples']}",
              file=sys.stderr)
    STOP_SECONDS.append(report.get("stop_s", 0.0))
    return float(report["seconds"])


STOP_SECONDS: list[float] = []
DUPLICATES: list[int] = []  # ledger rows the relay delivered more than once, per relay run
STALE: list[int] = []  # copies of an earlier phase's rows a relay run delivered, per relay run
LOAD_PER_ROUND: list[float] = []  # the 1-minute load average as each round ends


def profile(runtime: object, tenant_id: uuid.UUID, list_id: uuid.UUID, count: int = 1000
            ) -> dict[str, float]:
    """Per-message costs in one process (microseconds)."""
    from swiftmail_relay.handoff import spool_messages

    from swiftmail_core.sending import lifecycle, outbox, sweeper
    from swiftmail_core.sending.compose import Composer
    from swiftmail_core.transports import Outcome, SendResult

    settings, plugins = runtime.settings, runtime.plugins  # type: ignore[attr-defined]
    campaign_id = new_campaign(tenant_id, list_id)
    lifecycle.schedule_campaign(tenant_id, campaign_id)
    sweeper.tick(settings, plugins)
    composer = Composer(settings, plugins)
    claim_s = compose_s = spool_s = record_s = 0.0
    done = 0
    while done < count:
        started = time.perf_counter()
        claimed = outbox.claim_batch(limit=100, lease_seconds=300)
        claim_s += time.perf_counter() - started
        if not claimed:
            break
        started = time.perf_counter()
        messages, _ = composer.compose(claimed)
        compose_s += time.perf_counter() - started
        started = time.perf_counter()
        spool_messages(settings, messages)
        spool_s += time.perf_counter() - started
        started = time.perf_counter()
        outbox.record_results(claimed, [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in claimed])
        record_s += time.perf_counter() - started
        done += len(claimed)
    lifecycle.cancel_campaign(tenant_id, campaign_id)
    # Render alone, and DKIM alone, on the same campaign.
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.handoff import sign_canonical
    from swiftmail_relay.message_checks import canonical_line_endings, from_domain

    renderer = next(iter(composer._renderers.values()))[0]
    contact = {"id": str(uuid.uuid4()), "email": f"x@{RECIPIENT_DOMAIN}", "name": "X",
               "attributes": {"first_name": "X", "city": "Y"}}
    started = time.perf_counter()
    for index in range(count):
        rendered = renderer.render(index + 1, contact, None)
    render_us = (time.perf_counter() - started) / count * 1e6
    config = RelayConfig.from_settings(settings)
    started = time.perf_counter()
    for _ in range(count):
        # As handoff.prepare_message: the renderer's own output needs no line-ending check.
        raw = rendered.raw if rendered.crlf else canonical_line_endings(rendered.raw)
        sign_canonical(settings, config, raw, tenant_id, from_domain(raw))
    sign_us = (time.perf_counter() - started) / count * 1e6
    per = 1e6 / max(done, 1)
    return {"render_us": round(render_us), "dkim_sign_us": round(sign_us),
            "compose_incl_db_us": round(compose_s * per),
            "spool_incl_sign_us": round(spool_s * per), "claim_us": round(claim_s * per),
            "record_results_us": round(record_s * per), "message_bytes": len(rendered.raw)}


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, tear down; return the figures."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from swiftmail_core.testing.dns import DnsServer

    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-"))
    database = f"swiftmail_bench_{secrets.token_hex(4)}"
    env = environment(workdir, database)
    sink_port = free_port()
    sink = start_sink(sink_port)
    dns = DnsServer().start()
    dns.add(RECIPIENT_DOMAIN, "MX", f"10 mx.{RECIPIENT_DOMAIN}.")
    dns.add(f"mx.{RECIPIENT_DOMAIN}", "A", "127.0.0.1")
    env.update({
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(workdir / "spool"),
        # The in-process spool hand-off (network mode is the default): workers
        # spool while no relay runs in the workers-only phase.
        "SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE": "handoff",
        "SWIFTMAIL_DNS_NAMESERVERS": "127.0.0.1", "SWIFTMAIL_DNS_PORT": str(dns.port),
        "SWIFTMAIL_SEND_BATCH_SIZE": "200", "SWIFTMAIL_SEND_LEASE_SECONDS": "120",
        "SWIFTMAIL_WORKER_QUEUE_NAME": f"bench-{database}", "BENCH_SINK_PORT": str(sink_port),
        "SWIFTMAIL_PUBLIC_URL": "https://t.news.bench.example",
        "BENCH_STALL_SECONDS": str(args.stall_seconds),
        "BENCH_READY_DIR": str(workdir / "ready"),
    })
    (workdir / "ready").mkdir()
    os.environ.update(env)
    results: dict[str, list[float]] = {"relay_only": [], "end_to_end": [], "workers_only": []}
    cpu: dict[str, list[float]] = {name: [] for name in results}  # ms per message
    postgres: dict[str, list[float]] = {name: [] for name in results}  # ms per message
    sink_cpu: dict[str, list[float]] = {name: [] for name in results}  # ms per message
    n = args.subscribers
    kill_after = 0.5 if args.inject_failure == "kill-relay" else None
    try:
        initialise_scratch()
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.sending import lifecycle
        from swiftmail_core.settings import load_settings

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant_id, list_id = setup(n)
        profile_count = min(1000, n)
        if os.environ.get("SWIFTMAIL_BENCH_CPROFILE"):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profile_us = profiler.runcall(profile, runtime, tenant_id, list_id, profile_count)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        else:
            profile_us = profile(runtime, tenant_id, list_id, profile_count)
        shutil.rmtree(workdir / "spool", ignore_errors=True)  # the profile's messages
        backends = BackendCpu(env["DATABASE_URL"], interval=0.05)
        for _ in range(args.rounds):
            # Relay only: workers fill the spool first, then the relay delivers.
            campaign_id = new_campaign(tenant_id, list_id)
            workers = [spawn("worker", env) for _ in range(args.workers)]
            await_ready(workers)
            started, used = time.perf_counter(), children_cpu()
            backends.begin()
            lifecycle.schedule_campaign(tenant_id, campaign_id)
            go(workers)
            finish_workers(workers, args.timeout)
            wait_sent(tenant_id, campaign_id, args.timeout)
            results["workers_only"].append(per_second(n, time.perf_counter() - started))
            cpu["workers_only"].append((children_cpu() - used) / n * 1000)
            postgres["workers_only"].append(backends.end() / n * 1000)
            used, sink_used = children_cpu(), process_cpu(sink.pid) or 0.0
            backends.begin()
            relay = spawn("relay", env, str(n), str(campaign_id))
            await_ready([relay])
            go([relay])
            seconds = relay_seconds(relay, n, args.timeout)
            results["relay_only"].append(per_second(n, seconds))
            cpu["relay_only"].append((children_cpu() - used) / n * 1000)
            postgres["relay_only"].append(backends.end() / n * 1000)
            sink_cpu["relay_only"].append(((process_cpu(sink.pid) or 0.0) - sink_used) / n * 1000)
            check_final(tenant_id, campaign_id, n, "relay only")
            # End to end: workers and relay together from "campaign starts".
            campaign_id = new_campaign(tenant_id, list_id)
            relay = spawn("relay", env, str(n), str(campaign_id))
            workers = [spawn("worker", env) for _ in range(args.workers)]
            await_ready([relay, *workers])
            started, used = time.perf_counter(), children_cpu()
            sink_used = process_cpu(sink.pid) or 0.0
            backends.begin()
            lifecycle.schedule_campaign(tenant_id, campaign_id)
            go([relay, *workers])
            try:
                relay_seconds(relay, n, args.timeout, kill_after)
            finally:
                finish_workers(workers, args.timeout)
            results["end_to_end"].append(per_second(n, time.perf_counter() - started))
            cpu["end_to_end"].append((children_cpu() - used) / n * 1000)
            postgres["end_to_end"].append(backends.end() / n * 1000)
            sink_cpu["end_to_end"].append(((process_cpu(sink.pid) or 0.0) - sink_used) / n * 1000)
            check_final(tenant_id, campaign_id, n, "end to end")
            LOAD_PER_ROUND.append(round(os.getloadavg()[0], 2))
            print(f"round {len(results['end_to_end'])} of {args.rounds}: " + json.dumps(
                {**{name: round(values[-1], 1) for name, values in results.items()},
                 "load_1m": LOAD_PER_ROUND[-1]}), file=sys.stderr, flush=True)
        backends.close()
        runtime.close()
    finally:
        stop(sink)
        dns.stop()
        drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)
    e2e = median(results["end_to_end"])
    relay_only = median(results["relay_only"])
    # NOTE: per_second never returns 0 (it raises Unfinished), so no ratio is None.
    per_round = [ratio(end_to_end, alone) for end_to_end, alone
                 in zip(results["end_to_end"], results["relay_only"], strict=True)]
    return {
        "path": "worker -> relay transport (spool hand-off, DKIM RSA-2048) -> relay -> smtp-sink",
        "subscribers": n, "workers": args.workers, "rounds": args.rounds,
        "end_to_end_per_s": e2e,
        "end_to_end_per_hour": round(e2e * 3600),
        "relay_only_per_s": relay_only,
        "relay_only_per_hour": round(relay_only * 3600),
        "ratio_vs_relay_only": ratio(e2e, relay_only),
        # Each round's end to end against the relay only measured just before it:
        # on a machine whose speed drifts, the same-round ratios are the fairer ones.
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": median(per_round, 3),
        "workers_only_per_s": median(results["workers_only"]),
        "workers_only_per_hour": round(median(results["workers_only"]) * 3600),
        # CPU of the phase's worker and relay processes (start-up included, PostgreSQL not):
        # end to end on 2 cores can reach at most 2 / (workers + relay) per ms.
        "cpu_ms_per_message": {name: median(values, 3) for name, values in cpu.items()},
        # The PostgreSQL backends' CPU of the phase (every backend of the scratch database,
        # sampled every 0.05 s: a backend that exits loses at most that much).
        "postgres_cpu_ms_per_message": {name: median(values, 3)
                                        for name, values in postgres.items()},
        "sink_cpu_ms_per_message": {name: median(values, 3)
                                    for name, values in sink_cpu.items() if values},
        "runs_per_s": {name: [round(value, 1) for value in values]
                       for name, values in results.items()},
        "relay_stop_s": STOP_SECONDS,
        "duplicate_deliveries": DUPLICATES,
        "stale_deliveries": STALE,
        "load_1m_per_round": LOAD_PER_ROUND,
        "profile_us": profile_us,
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"subscribers": 200, "workers": 1, "rounds": 1,
                                        "timeout": 90.0, "stall_seconds": 30.0})
    options.add_argument("--subscribers", type=int, default=20_000)
    options.add_argument("--workers", type=int, default=2)
    options.add_argument("--rounds", type=int, default=1)
    options.add_argument("--timeout", type=float, default=3600.0,
                         help="seconds each phase may take before the run counts as unfinished")
    options.add_argument("--stall-seconds", type=float, default=120.0,
                         help="the relay delivering nothing new this long counts as stranded")
    options.add_argument("--inject-failure", choices=("kill-relay",),
                         help="kill-relay: SIGKILL the end-to-end relay 0.5 s in (must exit 1)")
    return options


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        from swiftmail_core.logs import configure_logging

        configure_logging("warning", "json")
        child_worker() if sys.argv[2] == "worker" else child_relay(int(sys.argv[3]), sys.argv[4])
    else:
        run("campaign_throughput", measure, parser())
