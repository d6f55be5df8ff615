"""Cluster-wide health figures for monitoring: collected once per interval, shared in Redis.

The figures an on-call engineer alerts on that no single process counts
(the age of the oldest due outbox row, complaint rates per tenant, the
tracking backlog, replication lag, failed jobs) come from PostgreSQL and
Redis. Asking for them on every scrape of every API process would repeat the
same queries many times a minute, so one process collects them at most once
per interval (a Redis lock decides which) and stores the snapshot in Redis;
every ``/metrics`` serves the stored snapshot (``swiftmail_web/metrics.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import redis

from swiftmail_core.db import system_tx

log = logging.getLogger(__name__)

#: How long a snapshot outlives its interval in Redis: a stale one still shows
#: (with its age in ``swiftmail_ops_collected_timestamp_seconds``), then none.
KEEP_INTERVALS = 10


@dataclasses.dataclass(frozen=True)
class GaugeLimits:
    """How much the snapshot reports (label cardinality) and how often it is collected."""

    interval_seconds: int = 60
    #: At most this many tenants get a complaint-rate series (the highest rates).
    complaint_tenants: int = 20
    #: A tenant needs this many deliveries in the window for a rate to mean anything.
    complaint_min_delivered: int = 1000
    complaint_window_hours: int = 24


def collect(client: redis.Redis, stream: str, limits: GaugeLimits) -> dict[str, Any]:
    """Query PostgreSQL and Redis once; return the snapshot (JSON-ready)."""
    started = time.time()
    snapshot: dict[str, Any] = {"collected_at": started}
    with system_tx() as database:
        snapshot["outbox_oldest_due_age_seconds"] = float(database.execute_sql(
            "/* cross-tenant */ SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0) "
            "FROM messages WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now()"
        ).fetchone()[0])
        snapshot["complaint_rates"] = [
            {"tenant": slug, "rate": float(rate)}
            for slug, rate in database.execute_sql(
                "/* cross-tenant */ SELECT t.slug, r.complained::float8 / r.delivered FROM ("
                "  SELECT tenant_id, sum(value) FILTER (WHERE metric = 'delivered') AS delivered,"
                "         sum(value) FILTER (WHERE metric = 'complained') AS complained"
                "  FROM campaign_rollups"
                "  WHERE bucket >= now() - make_interval(hours => %s) AND dimension = ''"
                "    AND metric IN ('delivered', 'complained')"
                "  GROUP BY tenant_id) r JOIN tenants t ON t.id = r.tenant_id "
                "WHERE r.delivered >= %s "
                "ORDER BY r.complained::float8 / r.delivered DESC, t.slug LIMIT %s",
                (limits.complaint_window_hours, max(1, limits.complaint_min_delivered),
                 limits.complaint_tenants)).fetchall()]
        snapshot["jobs_failed_last_hour"] = dict(database.execute_sql(
            "/* cross-tenant */ SELECT kind, count(*) FROM jobs "
            "WHERE status = 'failed' AND finished_at > now() - interval '1 hour' GROUP BY kind"
        ).fetchall())
        snapshot["webhook_deliveries_abandoned_last_hour"] = int(database.execute_sql(
            "/* cross-tenant */ SELECT count(*) FROM webhook_deliveries "
            "WHERE status = 'abandoned' AND updated_at > now() - interval '1 hour'"
        ).fetchone()[0])
        snapshot["replication"] = _replication(database)
    snapshot.update(_tracking_backlog(client, stream))
    snapshot["collect_seconds"] = time.time() - started
    return snapshot


def _replication(database: Any) -> dict[str, Any]:
    """Return the standbys streaming from the primary and, where visible, their lag.

    Lag columns are visible only to a role with ``pg_monitor`` (or
    ``pg_read_all_stats``); without it the standbys are counted and their lag
    is not reported.
    """
    if database.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0]:
        return {"standbys": 0, "lag": []}
    rows = database.execute_sql(
        "SELECT application_name, extract(epoch FROM replay_lag), "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
        "FROM pg_stat_replication WHERE state = 'streaming'").fetchall()
    lag = [{"standby": name, "seconds": float(seconds or 0.0), "bytes": float(lag_bytes)}
           for name, seconds, lag_bytes in rows if lag_bytes is not None]
    return {"standbys": len(rows), "lag": lag}


def _tracking_backlog(client: redis.Redis, stream: str) -> dict[str, Any]:
    """Return the stream's unstored hits and the age of the oldest (entry ids are ms)."""
    length = int(client.xlen(stream))
    oldest_age = 0.0
    if length:
        first = client.xrange(stream, count=1)
        if first:
            entry_id = first[0][0]
            if entry_id is None:
                raise RuntimeError(f"XRANGE on {stream!r} returned an entry without an id")
            oldest_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            oldest_age = max(0.0, time.time() - int(oldest_id.split("-")[0]) / 1000)
    return {"tracking_backlog_entries": length, "tracking_backlog_oldest_age_seconds": oldest_age}


def current(client: redis.Redis, prefix: str, stream: str,
            limits: GaugeLimits) -> dict[str, Any] | None:
    """Return the shared snapshot, collecting a new one first when it is due.

    At most one process collects per interval (``SET NX`` on a lock key); the
    others serve the snapshot stored last. None when there is none yet or
    Redis cannot be asked.
    """
    key = f"{prefix}ops_gauges"
    try:
        raw = client.get(key)
        snapshot = json.loads(raw) if raw else None
        stale = snapshot is None or time.time() - snapshot["collected_at"] >= \
            limits.interval_seconds
        if stale and client.set(f"{key}:lock", "1", nx=True,
                                ex=max(1, limits.interval_seconds)):
            try:
                snapshot = collect(client, stream, limits)
            except Exception:
                log.exception("collecting the ops gauges failed; the next interval retries")
            else:
                client.set(key, json.dumps(snapshot),
                           ex=limits.interval_seconds * KEEP_INTERVALS)
        return snapshot
    except redis.RedisError as ex:
        log.warning("ops gauges unavailable: %s", ex)
        return None
