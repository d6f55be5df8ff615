"""Benchmark: campaign subscribers per hour, "campaign starts" to "accepted by smtp-sink".

Scratch SwiftMail database on the local PostgreSQL (``init`` path; dropped
at the end); one tenant with a verified sending domain and an RSA-2048 DKIM
key; ``--subscribers`` contacts on a list; a ~20 KB personalised HTML
campaign with tracking on (10 distinct tracked links used 102 times,
open pixel, unsubscribe headers; first name and city in 23 places). Mail goes worker -> relay transport (durable spool hand-off,
DKIM-signed in the worker) -> the relay (its own process) -> Postfix
``smtp-sink`` over loopback, MX from a loopback DNS server.

Measured in the same run:

* ``profile_us``: per message, in one process: render, DKIM sign, spool
  write (batches of 100), and the outbox claim + result write per message;
* ``relay_only_per_s``: the relay delivering that campaign's already
  spooled messages (workers done before the relay starts);
* ``end_to_end_per_s``: a second campaign, workers and relay together,
  from ``schedule`` to the last 250 at the sink; ``ratio_vs_relay_only``.

Prints ONE JSON line (medians over --rounds).

    .venv/bin/python bench/campaign_throughput.py --subscribers 20000 --workers 2 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay_throughput import free_port, start_sink, stop  # noqa: E402
from bench.scratch import drop_database, environment  # noqa: E402

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

    runtime = start(load_settings(), process=ProcessKind.BENCH)
    worker = SendingWorker(runtime.settings, runtime.plugins)
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


def child_relay(expected: int) -> None:
    """Run the relay until ``expected`` recipients are delivered; print seconds."""
    import asyncio

    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.engine import Relay

    from swiftmail_core.settings import load_settings

    settings = load_settings()
    config = RelayConfig.from_settings(
        settings, smtp_port=int(os.environ["BENCH_SINK_PORT"]), allow_networks="127.0.0.0/8",
        max_connections_per_site=20, messages_per_connection=1000,
        scan_interval=float(os.environ.get("BENCH_SCAN_INTERVAL", "0.1")),
        hostname="bench.relay.test", warmup=False)

    async def run() -> float:
        relay = Relay(settings, config)
        started = time.perf_counter()
        await relay.start()
        while relay.delivered < expected:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await relay.stop()
        return elapsed

    print(json.dumps({"seconds": asyncio.run(run())}))


def spawn(mode: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """Start a child of this script."""
    return subprocess.Popen([sys.executable, __file__, "--child", mode, *extra],
                            env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE if mode == "relay" else subprocess.DEVNULL)


def wait_sent(tenant_id: uuid.UUID, campaign_id: uuid.UUID, timeout: float = 3600) -> None:
    """Wait until the campaign is sent."""
    from swiftmail_core.db import tenant_tx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with tenant_tx(tenant_id) as database:
            status = database.execute_sql("SELECT status FROM campaigns WHERE id = %s",
                                          (str(campaign_id),)).fetchone()[0]
        if status == "sent":
            return
        time.sleep(0.1)
    raise TimeoutError("campaign did not finish")


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
    from swiftmail_relay.handoff import sign_for_tenant

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
        sign_for_tenant(settings, config, rendered.raw, tenant_id)
    sign_us = (time.perf_counter() - started) / count * 1e6
    per = 1e6 / max(done, 1)
    return {"render_us": round(render_us), "dkim_sign_us": round(sign_us),
            "compose_incl_db_us": round(compose_s * per),
            "spool_incl_sign_us": round(spool_s * per), "claim_us": round(claim_s * per),
            "record_results_us": round(record_s * per), "message_bytes": len(rendered.raw)}


def main() -> None:
    """Set up, measure, tear down, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        from swiftmail_core.logs import configure_logging

        configure_logging("warning", "json")
        child_worker() if args.child[0] == "worker" else child_relay(int(args.child[1]))
        return

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from tests.relay.dnsserver import DnsServer

    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-"))
    database = f"swiftmail_bench_{secrets.token_hex(4)}"
    env = environment(workdir, database)
    dns = DnsServer().start()
    dns.add(RECIPIENT_DOMAIN, "MX", f"10 mx.{RECIPIENT_DOMAIN}.")
    dns.add(f"mx.{RECIPIENT_DOMAIN}", "A", "127.0.0.1")
    sink_port = free_port()
    sink = start_sink(sink_port)
    env.update({
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(workdir / "spool"),
        "SWIFTMAIL_DNS_NAMESERVERS": "127.0.0.1", "SWIFTMAIL_DNS_PORT": str(dns.port),
        "SWIFTMAIL_SEND_BATCH_SIZE": "200", "SWIFTMAIL_SEND_LEASE_SECONDS": "120",
        "SWIFTMAIL_WORKER_QUEUE_NAME": f"bench-{database}", "BENCH_SINK_PORT": str(sink_port),
        "SWIFTMAIL_PUBLIC_URL": "https://t.news.bench.example",
    })
    os.environ.update(env)
    from swiftmail_core.install import initialise

    initialise(None, {})
    results: dict[str, list[float]] = {"relay_only": [], "end_to_end": [], "workers_only": []}
    try:
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.sending import lifecycle
        from swiftmail_core.settings import load_settings

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant_id, list_id = setup(args.subscribers)
        if os.environ.get("SWIFTMAIL_BENCH_CPROFILE"):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profile_us = profiler.runcall(profile, runtime, tenant_id, list_id)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        else:
            profile_us = profile(runtime, tenant_id, list_id)
        shutil.rmtree(workdir / "spool", ignore_errors=True)  # the profile's messages
        n = args.subscribers
        for _ in range(args.rounds):
            # Relay only: workers fill the spool first, then the relay delivers.
            campaign_id = new_campaign(tenant_id, list_id)
            started = time.perf_counter()
            lifecycle.schedule_campaign(tenant_id, campaign_id)
            workers = [spawn("worker", env) for _ in range(args.workers)]
            for worker in workers:
                worker.wait()
            wait_sent(tenant_id, campaign_id)
            results["workers_only"].append(n / (time.perf_counter() - started))
            relay = spawn("relay", env, str(n))
            out, _ = relay.communicate()
            results["relay_only"].append(n / json.loads(out.strip().splitlines()[-1])["seconds"])
            # End to end: workers and relay together from "campaign starts".
            campaign_id = new_campaign(tenant_id, list_id)
            started = time.perf_counter()
            lifecycle.schedule_campaign(tenant_id, campaign_id)
            relay = spawn("relay", env, str(n))
            workers = [spawn("worker", env) for _ in range(args.workers)]
            relay.communicate()
            results["end_to_end"].append(n / (time.perf_counter() - started))
            for worker in workers:
                worker.wait()
        runtime.close()
    finally:
        stop(sink)
        dns.stop()
        drop_database(database)
    e2e = statistics.median(results["end_to_end"])
    relay_only = statistics.median(results["relay_only"])
    print(json.dumps({
        "benchmark": "campaign_throughput",
        "path": "worker -> relay transport (spool hand-off, DKIM RSA-2048) -> relay -> smtp-sink",
        "subscribers": n, "workers": args.workers, "rounds": args.rounds, "cpus": os.cpu_count(),
        "end_to_end_per_s": round(e2e, 1),
        "end_to_end_per_hour": round(e2e * 3600),
        "relay_only_per_s": round(relay_only, 1),
        "ratio_vs_relay_only": round(e2e / relay_only, 3),
        "workers_only_per_s": round(statistics.median(results["workers_only"]), 1),
        "profile_us": profile_us,
        "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
