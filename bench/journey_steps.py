"""Benchmark: journey steps per second beside a sending campaign, in one run.

Creates a scratch SwiftMail database (dropped at the end) with one tenant
whose lists hold ``--subscribers`` contacts (``bench/campaign_audience.py``'s
data), a sending campaign to both lists (its ledger written), and an active
journey on list A (send an email, then wait a day). Then it measures:

* campaign_alone: outbox claims of campaign rows (claim, then record each as
  accepted, as a worker does after its transport answers) for
  ``--seconds``, nothing else running;
* enroll: every contact confirmed on list A entering the journey at once
  (``enroll_subscribed`` in chunks, as a bulk subscribe does);
* beside: the journey runner (``run_due``, the worker's background round)
  until every enrollment reached its wait, while the campaign claims go on in
  another thread: journey steps per second and campaign rows per second in
  the same window.

Prints ONE JSON line.

    .venv/bin/python bench/journey_steps.py [--subscribers 100000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    Unfinished,
    analyze,
    arguments,
    drop_database,
    environment,
    initialise_scratch,
    per_second,
    run,
)
from bench.campaign_audience import new_campaign, populate  # noqa: E402

CLAIM_BATCH = 500
ENROLL_CHUNK = 10_000


def claim_campaign_rows(stop: threading.Event, counts: list[float]) -> None:
    """Claim and record due rows as accepted until ``stop``.

    ``counts``: campaign rows, journey rows, when the last campaign row was claimed.
    """
    from swiftmail_core.sending import outbox
    from swiftmail_core.transports import Outcome, SendResult

    owner = f"bench-{uuid.uuid4().hex[:8]}"
    while not stop.is_set():
        claimed = outbox.claim_batch(owner, limit=CLAIM_BATCH)
        if not claimed:
            time.sleep(0.05)
            continue
        outbox.record_results(claimed, [SendResult(row.ledger_id, Outcome.ACCEPTED)
                                        for row in claimed])
        campaign_rows = sum(1 for row in claimed if row.kind == "campaign")
        counts[0] += campaign_rows
        if campaign_rows:
            counts[2] = time.perf_counter()
        counts[1] += sum(1 for row in claimed if row.kind == "journey")


def claim_for(seconds: float) -> tuple[float, list[float]]:
    """Run the campaign claimer alone for ``seconds``; return (elapsed, counts)."""
    stop, counts = threading.Event(), [0, 0, 0.0]
    worker = threading.Thread(target=claim_campaign_rows, args=(stop, counts))
    started = time.perf_counter()
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join()
    return time.perf_counter() - started, counts


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, tear down; return the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-"))
    database = f"swiftmail_bench_{secrets.token_hex(4)}"
    env = environment(workdir, database)
    os.environ.update(env)
    initialise_scratch()
    try:
        from swiftmail_core.db import system_tx, tenant_tx
        from swiftmail_core.journeys import runner
        from swiftmail_core.journeys.enrollment import enroll_subscribed
        from swiftmail_core.journeys.service import create_journey
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.sending.audience import resolve_audience
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        with system_tx() as db:
            db.execute_sql("UPDATE tenants SET send_rate_per_second = 1000000, "
                           "daily_quota = 100000000 WHERE id = %s", (str(tenant.id),))
        list_ids = populate(tenant.id, args.subscribers)
        campaign = new_campaign(tenant.id, list_ids)
        recipients = resolve_audience(tenant.id, campaign)
        steps = [{"id": "welcome", "type": "send_email", "from_email": "a@b.example",
                  "subject": "Welcome {{ contact.name }}", "text": "Hello"},
                 {"id": "later", "type": "wait", "seconds": 86400}]
        with tenant_tx(tenant.id) as db:
            journey = create_journey(db, tenant.id, name="bench", steps=steps,
                                     trigger={"type": "list_subscribed", "list_id": list_ids[0]})
            db.execute_sql("UPDATE journeys SET status = 'active' WHERE id = %s", (str(journey),))
            contacts = [str(row[0]) for row in db.execute_sql(
                "SELECT contact_id FROM subscriptions WHERE list_id = %s", (list_ids[0],))]
        analyze(env["DATABASE_URL"], "contacts, subscriptions, suppressions, messages")
        alone_s, alone = claim_for(args.seconds)
        started = time.perf_counter()
        enrolled = 0
        for index in range(0, len(contacts), ENROLL_CHUNK):
            with tenant_tx(tenant.id) as db:
                enrolled += enroll_subscribed(db, tenant.id, [list_ids[0]],
                                              contacts[index:index + ENROLL_CHUNK])
        enroll_s = time.perf_counter() - started
        analyze(env["DATABASE_URL"], "journey_enrollments")
        stop, beside = threading.Event(), [0, 0, 0.0]
        claimer = threading.Thread(target=claim_campaign_rows, args=(stop, beside))
        started = time.perf_counter()
        claimer.start()
        ran = 0
        while True:
            done = runner.run_due(5_000, max_seconds=60.0)
            ran += done
            if not done:
                break
        journey_s = time.perf_counter() - started
        stop.set()
        claimer.join()
        # The campaign's rate while it still had rows (it may run out first).
        beside_s = (beside[2] or time.perf_counter()) - started
        with tenant_tx(tenant.id) as db:
            (step_runs,) = db.execute_sql("SELECT count(*) FROM journey_step_runs").fetchone()
            (waiting,) = db.execute_sql(
                "SELECT count(*) FROM journey_enrollments WHERE status = 'active' "
                "AND step = 2").fetchone()
            (exited,) = db.execute_sql("SELECT count(*) FROM journey_enrollments "
                                       "WHERE status = 'exited'").fetchone()
        if waiting + exited != enrolled:
            raise Unfinished(f"{enrolled} enrolled, {waiting} at the wait, {exited} exited")
        runtime.close()
    finally:
        drop_database(database)
    return {
        "subscribers": args.subscribers,
        "campaign_recipients": recipients,
        "campaign_alone_rows": int(alone[0]),
        "campaign_alone_rows_per_s": round(per_second(int(alone[0]), alone_s), 1),
        "enrolled": enrolled,
        "enroll_s": round(enroll_s, 2),
        "journey_enrollments_run": ran,
        "journey_step_runs": step_runs,
        "journey_exited_suppressed_or_inactive": exited,
        "journey_s": round(journey_s, 2),
        "journey_steps_per_s": round(per_second(step_runs, journey_s), 1),
        "journey_emails_per_s": round(per_second(waiting, journey_s), 1),
        "campaign_beside_rows": int(beside[0]),
        "campaign_beside_rows_per_s": round(per_second(int(beside[0]), beside_s), 1),
        "journey_mail_claimed_beside": int(beside[1]),
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"subscribers": 2_000, "seconds": 2.0})
    options.add_argument("--subscribers", type=int, default=100_000)
    options.add_argument("--seconds", type=float, default=10.0,
                         help="How long the campaign claims run alone first.")
    return options


if __name__ == "__main__":
    run("journey_steps", measure, parser())
