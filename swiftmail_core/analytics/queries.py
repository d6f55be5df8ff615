"""Rollup queries: per campaign, per tenant date range, per recipient domain."""

from __future__ import annotations

import datetime
import uuid
from collections import defaultdict

from swiftmail_core.analytics.shape import delivery_by_domain, stats_from_counts
from swiftmail_core.db import current_database, current_tenant
from swiftmail_core.errors import NotFoundError, TenantIsolationError, ValidationError

INTERVALS = ("hour", "day")


def _tenant() -> str:
    """Return the enclosing transaction's tenant: every query names it (one shard on Citus)."""
    tenant = current_tenant()
    if tenant is None:
        raise TenantIsolationError("analytics queries run inside analytics_tx or tenant_tx")
    return str(tenant)


def _campaign(campaign_id: uuid.UUID) -> tuple[str, int]:
    row = current_database().execute_sql(
        "SELECT name, recipient_count FROM campaigns WHERE tenant_id = %s AND id = %s",
        (_tenant(), str(campaign_id))
    ).fetchone()
    if row is None:
        raise NotFoundError(f"campaign {campaign_id} not found")
    return row[0], int(row[1])


def campaign_summary(campaign_id: uuid.UUID) -> dict:
    """Return the campaign's totals (inside its tenant's ``tenant_tx``)."""
    name, recipients = _campaign(campaign_id)
    rows = current_database().execute_sql(
        "SELECT metric, sum(value) FROM campaign_rollups WHERE tenant_id = %s "
        "AND campaign_id = %s AND dimension COLLATE \"C\" = '' GROUP BY metric",
        (_tenant(), str(campaign_id)),
    ).fetchall()
    # NOTE: ORDER BY ... LIMIT 1 walks the primary key from either end.
    first_last = current_database().execute_sql(
        "SELECT (SELECT bucket FROM campaign_rollups WHERE tenant_id = %s AND campaign_id = %s "
        "ORDER BY tenant_id, campaign_id, bucket LIMIT 1), (SELECT bucket FROM campaign_rollups "
        "WHERE tenant_id = %s AND campaign_id = %s "
        "ORDER BY tenant_id DESC, campaign_id DESC, bucket DESC LIMIT 1)",
        (_tenant(), str(campaign_id), _tenant(), str(campaign_id)),
    ).fetchone()
    return {
        "object": "campaign_stats", "campaign_id": str(campaign_id), "name": name,
        "recipients": recipients,
        **stats_from_counts({metric: int(value) for metric, value in rows}),
        "first_event_hour": first_last[0], "last_event_hour": first_last[1],
    }


def campaign_timeseries(campaign_id: uuid.UUID, interval: str = "hour") -> dict:
    """Return the campaign's metrics per hour or day, oldest first."""
    if interval not in INTERVALS:
        raise ValidationError.for_field("interval", "must be hour or day")
    _campaign(campaign_id)
    rows = current_database().execute_sql(
        "SELECT date_trunc(%s, bucket, 'UTC') AS b, metric, sum(value) FROM campaign_rollups "
        "WHERE tenant_id = %s AND campaign_id = %s AND dimension COLLATE \"C\" = '' "
        "GROUP BY b, metric ORDER BY b", (interval, _tenant(), str(campaign_id)),
    ).fetchall()
    return {"object": "timeseries", "campaign_id": str(campaign_id), "interval": interval,
            "data": _series(rows)}


def _series(rows: list[tuple]) -> list[dict]:
    buckets: dict[datetime.datetime, dict[str, int]] = defaultdict(dict)
    for bucket, metric, value in rows:
        buckets[bucket][metric] = int(value)
    return [{"bucket": bucket, "metrics": metrics} for bucket, metrics in buckets.items()]


def campaign_links(campaign_id: uuid.UUID) -> dict:
    """Return total and unique clicks per link, human and machine."""
    _campaign(campaign_id)
    rows = current_database().execute_sql(
        "SELECT split_part(r.dimension, ':', 2)::bigint AS link_id, r.metric, sum(r.value) "
        "FROM campaign_rollups r WHERE r.tenant_id = %s AND r.campaign_id = %s "
        "AND r.dimension COLLATE \"C\" >= 'link:' AND r.dimension COLLATE \"C\" < 'link;' "
        "GROUP BY 1, 2", (_tenant(), str(campaign_id)),
    ).fetchall()
    links = current_database().execute_sql(
        "SELECT id, url, label FROM links WHERE tenant_id = %s AND campaign_id = %s ORDER BY id",
        (_tenant(), str(campaign_id)),
    ).fetchall()
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for link_id, metric, value in rows:
        counts[int(link_id)][metric] = int(value)
    data = []
    for link_id, url, label in links:
        metric = counts.get(link_id, {})
        data.append({
            "link_id": link_id, "url": url, "label": label,
            "clicks": {audience: {"total": metric.get(f"clicked.{audience}", 0),
                                  "unique": metric.get(f"clicked.unique.{audience}", 0)}
                       for audience in ("human", "machine")},
        })
    return {"object": "list", "campaign_id": str(campaign_id), "data": data}


def _domains(rows: list[tuple]) -> list[dict]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for dimension, metric, value in rows:
        counts[dimension.split(":", 1)[1]][metric] = int(value)
    data = [{"domain": domain, **delivery_by_domain(metrics)} for domain, metrics in counts.items()]
    return sorted(data, key=lambda d: (-(d["delivered"] + d["bounced"]["total"]), d["domain"]))


def campaign_domains(campaign_id: uuid.UUID) -> dict:
    """Return delivered, deferred and bounced counts per recipient domain."""
    _campaign(campaign_id)
    rows = current_database().execute_sql(
        "SELECT dimension, metric, sum(value) FROM campaign_rollups WHERE tenant_id = %s "
        "AND campaign_id = %s "
        "AND dimension COLLATE \"C\" >= 'domain:' AND dimension COLLATE \"C\" < 'domain;' "
        "GROUP BY 1, 2", (_tenant(), str(campaign_id)),
    ).fetchall()
    return {"object": "list", "campaign_id": str(campaign_id), "data": _domains(rows)}


def _range(start: datetime.datetime, end: datetime.datetime) -> None:
    if end <= start:
        raise ValidationError.for_field("to", "must be after from")
    if end - start > datetime.timedelta(days=3660):
        raise ValidationError.for_field("to", "the range may span at most ten years")


def tenant_summary(start: datetime.datetime, end: datetime.datetime) -> dict:
    """Return the tenant's totals and daily series over ``[start, end)``."""
    _range(start, end)
    rows = current_database().execute_sql(
        "SELECT date_trunc('day', bucket, 'UTC') AS b, metric, sum(value) "
        "FROM campaign_rollups WHERE tenant_id = %s AND bucket >= %s AND bucket < %s "
        "AND dimension = '' GROUP BY b, metric ORDER BY b", (_tenant(), start, end),
    ).fetchall()
    totals: dict[str, int] = defaultdict(int)
    for _bucket, metric, value in rows:
        totals[metric] += int(value)
    campaigns = current_database().execute_sql(
        "SELECT count(DISTINCT campaign_id) FROM campaign_rollups "
        "WHERE tenant_id = %s AND bucket >= %s AND bucket < %s", (_tenant(), start, end),
    ).fetchone()[0]
    return {"object": "tenant_stats", "from": start, "to": end, "campaigns": int(campaigns),
            **stats_from_counts(totals), "daily": _series(rows)}


def tenant_domains(start: datetime.datetime, end: datetime.datetime) -> dict:
    """Return per-recipient-domain delivery over ``[start, end)``, all campaigns."""
    _range(start, end)
    rows = current_database().execute_sql(
        "SELECT dimension, metric, sum(value) FROM campaign_rollups WHERE tenant_id = %s "
        "AND bucket >= %s AND bucket < %s AND dimension LIKE 'domain:%%' GROUP BY 1, 2",
        (_tenant(), start, end),
    ).fetchall()
    return {"object": "list", "from": start, "to": end, "data": _domains(rows)}
