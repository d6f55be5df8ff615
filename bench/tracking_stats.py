"""Benchmark: campaign statistics latency with 10,000,000 events stored.

Creates a scratch database (the ``init`` path; dropped at the end), one
campaign with ``--events`` raw events (default 10,000,000: accepted,
delivered, deferred, bounced by class, opens and clicks human and machine
over 10 links, complaints, unsubscribes; 20 recipient domains; 30 days),
inserted set-based as the system role, and the hourly rollups those events
produce (one ``INSERT ... SELECT ... GROUP BY`` with the same keys
``record_events`` writes, unique counts included).

Then, inside the tenant's ``tenant_tx`` as the app role (RLS on), the median
and p99 over ``--repeat`` calls of each analytics read (campaign summary,
hourly series, links, domains, tenant 30-day summary), against the baseline
measured in the same run: the same summary computed by ``COUNT(*) ... GROUP
BY`` over the raw events (what rollups avoid).

With ``--ingest-rate`` (default 2,000 hits/s, the tracking bar) the reads run
while tracking ingests into the same campaign: ``swiftmail tracking serve``,
the drainer as shipped (``nice -n 10``) and the open-loop generator offering
opens and clicks on 1,000 ledger rows of the campaign (``bench/_tracking_ingest.py``);
the hits' events and rollups are written while the analytics read them. The
raw-count baseline runs after the ingest.

    .venv/bin/python bench/tracking_stats.py [--events 10000000] [--repeat 50]
        [--ingest-rate 2000] [--ingest-seconds 120]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import (
    Unfinished,
    arguments,
    drop_database,
    environment,
    initialise_scratch,
    run,
)
from bench._tracking_ingest import Ingest

EVENT_MIX = """
CASE WHEN r < 0.18 THEN 'accepted' WHEN r < 0.36 THEN 'delivered' WHEN r < 0.40 THEN 'deferred'
     WHEN r < 0.43 THEN 'bounced' WHEN r < 0.80 THEN 'opened' WHEN r < 0.995 THEN 'clicked'
     WHEN r < 0.997 THEN 'complained' ELSE 'unsubscribed' END
"""
ROLLUP_SQL = """
WITH e AS (
  SELECT tenant_id, campaign_id, date_trunc('hour', occurred_at) AS bucket, type, bounce_class,
         is_machine, recipient_domain, link_id, message_id,
         CASE WHEN type = 'bounced' THEN 'bounced.' || bounce_class
              WHEN type IN ('opened', 'clicked')
              THEN type || CASE WHEN is_machine THEN '.machine' ELSE '.human' END
              ELSE type END AS metric
  FROM events WHERE tenant_id = %(t)s AND campaign_id = %(c)s
), keys AS (
  SELECT tenant_id, campaign_id, bucket, metric, '' AS dimension FROM e
  UNION ALL SELECT tenant_id, campaign_id, bucket, metric, 'domain:' || recipient_domain FROM e
    WHERE type IN ('delivered', 'deferred', 'bounced', 'expired')
  UNION ALL SELECT tenant_id, campaign_id, bucket, metric, 'link:' || link_id FROM e
    WHERE type = 'clicked'
  UNION ALL SELECT tenant_id, campaign_id, min(bucket),
         split_part(metric, '.', 1) || '.unique.' || split_part(metric, '.', 2), ''
    FROM e WHERE type IN ('opened', 'clicked') GROUP BY 1, 2, metric, message_id
  UNION ALL SELECT tenant_id, campaign_id, min(bucket), 'clicked.unique.' ||
         split_part(metric, '.', 2), 'link:' || link_id
    FROM e WHERE type = 'clicked' GROUP BY 1, 2, metric, message_id, link_id
)
INSERT INTO campaign_rollups (tenant_id, campaign_id, bucket, metric, dimension, value)
SELECT tenant_id, campaign_id, bucket, metric, dimension, count(*) FROM keys
GROUP BY 1, 2, 3, 4, 5
"""
RAW_SUMMARY = """
SELECT type, bounce_class, is_machine, count(*), count(DISTINCT message_id)
FROM events WHERE campaign_id = %s GROUP BY 1, 2, 3
"""


def _timed(call, repeat: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2)}


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, clean up; return the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-stats-bench-"))
    database = f"swiftmail_bench_stats_{uuid.uuid4().hex[:8]}"
    env = environment(workdir, database)
    os.environ.update(env)
    ingest: Ingest | None = None
    try:
        from swiftmail_core import analytics, tokens
        from swiftmail_core.db import app_db, system_tx, tenant_tx
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        initialise_scratch()
        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        campaign = uuid.uuid4()
        with tenant_tx(tenant.id):
            app_db.execute_sql("INSERT INTO campaigns (tenant_id, id, name, status) VALUES "
                               "(%s, %s, 'bench', 'sent')", (str(tenant.id), str(campaign)))
            for n in range(10):
                app_db.execute_sql("INSERT INTO links (tenant_id, campaign_id, url) VALUES "
                                   "(%s, %s, %s)", (str(tenant.id), str(campaign),
                                                    f"https://example.com/{n}"))
            link_base = app_db.execute_sql("SELECT min(id) FROM links").fetchone()[0]
        start_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
        loaded = time.perf_counter()
        with system_tx() as database_handle:
            database_handle.execute_sql(
                "INSERT INTO events (tenant_id, occurred_at, type, message_id, campaign_id, "
                "link_id, bounce_class, is_machine, recipient_domain) "
                "SELECT %(t)s, %(start)s + (n * interval '2592 seconds') / %(total)s * 1000, "
                f"x.type, n %% 1000000, %(c)s, "
                "CASE WHEN x.type = 'clicked' THEN %(link)s + n %% 10 END, "
                "CASE WHEN x.type = 'bounced' THEN (ARRAY['hard', 'soft', 'policy', "
                "'mailbox_full'])[1 + n %% 4] END, "
                "x.type IN ('opened', 'clicked') AND n %% 3 = 0, "
                "'domain' || (n %% 20) || '.example' "
                f"FROM generate_series(1, %(total)s) n, LATERAL (SELECT {EVENT_MIX} AS type "
                "FROM (SELECT ((n * 2654435761) %% 1000003) / 1000003.0 AS r) s) x",
                {"t": str(tenant.id), "c": str(campaign), "start": start_at,
                 "total": args.events, "link": link_base},
            )
        load_seconds = time.perf_counter() - loaded
        rolled = time.perf_counter()
        with system_tx() as database_handle:
            database_handle.execute_sql(ROLLUP_SQL, {"t": str(tenant.id), "c": str(campaign)})
        rollup_seconds = time.perf_counter() - rolled
        # What autovacuum does in production: statistics and the visibility map.
        owner = psycopg2.connect(runtime.targets.dsn("owner"))
        owner.autocommit = True
        with owner.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE events")
            cursor.execute("VACUUM ANALYZE campaign_rollups")
        owner.close()
        with system_tx() as database_handle:
            rollup_rows = database_handle.execute_sql(
                "SELECT count(*) FROM campaign_rollups").fetchone()[0]
        end_at = start_at + datetime.timedelta(days=31)

        def inside(call):  # type: ignore[no-untyped-def]
            def run() -> object:
                with tenant_tx(tenant.id):
                    return call()
            return run

        if args.ingest_rate > 0:
            ingest = Ingest(env, workdir, args.ingest_rate, args.ingest_seconds)
            ingest.start(_ingest_paths(tenant.id, campaign, link_base, tokens))
            time.sleep(3)  # the drainer is storing hits before the first read
        reads_started = time.perf_counter()
        results = {
            "summary": _timed(inside(lambda: analytics.campaign_summary(campaign)), args.repeat),
            "timeseries_hour": _timed(
                inside(lambda: analytics.campaign_timeseries(campaign, "hour")), args.repeat),
            "links": _timed(inside(lambda: analytics.campaign_links(campaign)), args.repeat),
            "domains": _timed(inside(lambda: analytics.campaign_domains(campaign)), args.repeat),
            "tenant_30_days": _timed(
                inside(lambda: analytics.tenant_summary(start_at, end_at)), args.repeat),
        }
        reads_seconds = time.perf_counter() - reads_started
        ingested: dict[str, Any] = {}
        if ingest is not None:
            # NOTE: reads that outlast the ingest are reported (ran_throughout false), not dropped.
            throughout = ingest.running()
            ingested = ingest.finish() | {"ran_throughout": throughout}
        results["baseline_raw_count"] = _timed(inside(lambda: app_db.execute_sql(
            RAW_SUMMARY, (str(campaign),)).fetchall()), args.baseline_repeat)
        with tenant_tx(tenant.id):
            check = analytics.campaign_summary(campaign)
            raw = app_db.execute_sql("SELECT count(*) FROM events").fetchone()[0]
            hit_events = app_db.execute_sql(
                "SELECT count(*) FROM events WHERE source_key LIKE %s", ("hit:%",)).fetchone()[0]
        runtime.close()
        if int(raw) - int(hit_events) != args.events:
            raise Unfinished(f"{int(raw) - int(hit_events)} events stored of {args.events}")
        if ingested and int(hit_events) != ingested["hits_acknowledged"]:
            raise Unfinished(f"{ingested['hits_acknowledged']} hits acknowledged, "
                             f"{hit_events} events stored")
        summary: dict[str, Any] = {
            "events": int(raw) - int(hit_events), "rollup_rows": int(rollup_rows),
            "load_seconds": round(load_seconds, 1), "rollup_build_seconds": round(rollup_seconds, 1),
            "repeat": args.repeat,
            "summary_delivered": check["delivered"],
            "reads_seconds": round(reads_seconds, 1),
        }
        if ingested:
            summary["ingest"] = {
                "offered_rate": args.ingest_rate,
                "achieved_rate": ingested.get("achieved_rate"), "p50_ms": ingested.get("p50_ms"),
                "p99_ms": ingested.get("p99_ms"), "generator_overran": "overran" in ingested,
                "hits_acknowledged": ingested["hits_acknowledged"],
                "events_stored": int(hit_events),
                "drain_tail_seconds": ingested["drain_tail_seconds"],
                "ran_throughout_the_reads": ingested["ran_throughout"],
            }
        for name, timing in results.items():
            for metric, value in timing.items():
                summary[f"{name}_{metric}"] = value
        summary["summary_speedup_vs_raw_count"] = round(
            results["baseline_raw_count"]["p50_ms"] / results["summary"]["p50_ms"], 1)
        return summary
    finally:
        if ingest is not None:
            ingest.close()
        from swiftmail_core import db

        db.disconnect()
        drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)


def _ingest_paths(tenant_id: uuid.UUID, campaign: uuid.UUID, first_link: int,
                  tokens: Any) -> list[str]:
    """Add 1,000 sent ledger rows to the campaign; return their pixel and click paths."""
    from swiftmail_core.db import app_db, tenant_tx
    from swiftmail_core.settings import load_settings

    key = load_settings().secret_key
    with tenant_tx(tenant_id):
        ids = [row[0] for row in app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, email, status, sent_at) "
            "SELECT %s, %s, 'r' || n || '@example.com', 'delivered', now() - interval '1 hour' "
            "FROM generate_series(1, 1000) n RETURNING id",
            (str(tenant_id), str(campaign))).fetchall()]
    paths = []
    for n, message in enumerate(ids):
        paths.append(f"/t/o/{tokens.make_open_token(key, tenant_id, message)}.gif")
        link = first_link + n % 10
        paths.append(f"/t/c/{tokens.make_click_token(key, tenant_id, link, message)}")
    return paths


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"events": 20_000, "repeat": 3, "baseline_repeat": 1,
                                        "ingest_rate": 50, "ingest_seconds": 10})
    options.add_argument("--events", type=int, default=10_000_000)
    options.add_argument("--repeat", type=int, default=50)
    options.add_argument("--baseline-repeat", type=int, default=3)
    options.add_argument("--ingest-rate", type=float, default=2000,
                         help="Tracking hits/s offered while the reads run; 0: no ingest.")
    options.add_argument("--ingest-seconds", type=float, default=120,
                         help="How long the ingest runs (longer than the reads).")
    return options


if __name__ == "__main__":
    run("tracking_stats", measure, parser())
