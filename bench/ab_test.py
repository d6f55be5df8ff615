"""Benchmark: an A/B tested campaign's split, results and decision at scale.

Creates a scratch SwiftMail database (dropped at the end) with one tenant
whose lists hold ``--subscribers`` contacts (the audience benchmark's data:
``bench/campaign_audience.py``), then measures, on fresh campaigns:

* resolve_plain: ``resolve_audience`` of a campaign without a test;
* resolve_ab: the same audience with a 20% test of three variants (the random
  draw and the round-robin deal inside each range's ``INSERT ... SELECT``);
* stats: ``ab_tests.stats.variant_counts`` (what ``GET .../ab`` and the
  decision read) with 30% of the test opened and 5% clicked by people;
* decide: the tick's ``decide_due_tests``: pick the winner and move the first
  batch of waiting rows (50,000) to the queue with its variant;
* release: what the tick's ``release_decided`` does, the other waiting rows
  batch by batch (the longest one transaction lasts: ``release_batch_max_s``);
* stats_after: the results again once every row has a variant.

Prints ONE JSON line.

    .venv/bin/python bench/ab_test.py [--subscribers 1000000]
"""

from __future__ import annotations

import argparse
import sys
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
    run,
    scratch_install,
    timed,
)
from bench.campaign_audience import new_campaign, populate  # noqa: E402

TEST_PERCENT = 20
VARIANTS = ("A", "B", "C")


def make_ab(tenant_id: uuid.UUID, campaign_id: str) -> None:
    """Give the (sending) campaign a 20% test of three subject variants."""
    from swiftmail_core.db import tenant_tx

    with tenant_tx(tenant_id) as database:
        for key in VARIANTS:
            database.execute_sql(
                "INSERT INTO campaign_variants (tenant_id, campaign_id, key, subject) "
                "VALUES (%s, %s, %s, %s)", (str(tenant_id), campaign_id, key, f"Subject {key}"))
        database.execute_sql(
            "UPDATE campaigns SET ab_test_percent = %s, ab_metric = 'opens', "
            "ab_decide_after_seconds = 0 WHERE id = %s", (TEST_PERCENT, campaign_id))


def engage(tenant_id: uuid.UUID, campaign_id: str) -> None:
    """Deliver the test rows; 30% of them opened and 5% clicked by people (more for B)."""
    from swiftmail_core.db import tenant_tx

    with tenant_tx(tenant_id) as database:
        database.execute_sql("UPDATE messages SET status = 'delivered' WHERE campaign_id = %s "
                             "AND status = 'queued'", (campaign_id,))
        for metric, every in (("opened.human", 3), ("clicked.human", 20)):
            database.execute_sql(
                "INSERT INTO engagement_firsts (tenant_id, message_id, metric, campaign_id, "
                "first_at) SELECT tenant_id, id, %s, campaign_id, now() FROM messages "
                "WHERE campaign_id = %s AND variant IS NOT NULL "
                "AND (id %% %s = 0 OR (variant = 'B' AND id %% %s = 1))",
                (metric, campaign_id, every, every))


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, tear down; return the figures."""
    with scratch_install() as env:
        from swiftmail_core.ab_tests import decision
        from swiftmail_core.ab_tests.decision import decide_due_tests
        from swiftmail_core.ab_tests.stats import variant_counts
        from swiftmail_core.db import tenant_tx
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.sending.audience import resolve_audience
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        list_ids = populate(tenant.id, args.subscribers)
        analyze(env["DATABASE_URL"], "contacts, subscriptions, suppressions, messages")
        plain = new_campaign(tenant.id, list_ids)
        plain_s, recipients = timed(lambda: resolve_audience(tenant.id, plain))
        tested = new_campaign(tenant.id, list_ids)
        make_ab(tenant.id, tested)
        ab_s, ab_recipients = timed(lambda: resolve_audience(tenant.id, tested))
        if ab_recipients != recipients:
            raise Unfinished(f"the A/B audience has {ab_recipients} rows, the plain {recipients}")
        engage(tenant.id, tested)
        analyze(env["DATABASE_URL"], "messages, engagement_firsts")

        def counts() -> dict[str, dict[str, int]]:
            with tenant_tx(tenant.id) as db:
                return variant_counts(db, tenant.id, tested)

        stats_s, before = timed(counts)
        in_test = sum(found["recipients"] for found in before.values())
        decide_s, decided = timed(decide_due_tests)
        if [d[2] for d in decided] != ["B"]:
            raise Unfinished(f"expected B to win, decided: {decided}")
        # The tick's release_decided, batch by batch for this campaign, each timed.
        batches: list[float] = []
        released = 0
        started = time.perf_counter()
        while True:
            seconds, moved = timed(lambda: decision.release_batch(tenant.id, tested))
            batches.append(seconds)
            released += moved
            if moved < decision.RELEASE_BATCH:
                break
        release_s = time.perf_counter() - started
        stats_after_s, after = timed(counts)
        if sum(found["recipients"] for found in after.values()) != recipients:
            raise Unfinished("not every row has a variant after the decision")
        runtime.close()
    return {
        "subscribers": args.subscribers,
        "recipients": recipients,
        "test_recipients": in_test,
        "per_variant": {key: found["recipients"] for key, found in sorted(before.items())},
        "resolve_plain_s": round(plain_s, 2),
        "resolve_ab_s": round(ab_s, 2),
        "stats_s": round(stats_s, 3),
        "decide_s": round(decide_s, 2),
        "release_s": round(release_s, 2),
        "release_batches": len(batches),
        "release_batch_max_s": round(max(batches, default=0.0), 2),
        "released": recipients - in_test,
        "released_by_release": released,
        "stats_after_s": round(stats_after_s, 3),
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"subscribers": 2_000})
    options.add_argument("--subscribers", type=int, default=1_000_000)
    return options


if __name__ == "__main__":
    run("ab_test", measure, parser())
