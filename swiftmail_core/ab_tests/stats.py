"""Per-variant results of an A/B test, with Wilson score confidence intervals.

A variant's opens and clicks are its recipients' unique HUMAN opens and
clicks: ``engagement_firsts`` keeps each message's first human open and
first human click (machine opens from privacy proxies, prefetches and
scanners are recorded apart and never counted here). Rates are per delivered
message (accepted by the next hop or delivered, complaints included).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

#: z for a two-sided 95% interval.
Z_95 = 1.959963984540054
HANDED_OVER = ("accepted", "delivered", "complained")

_STATS_SQL = """
SELECT m.variant,
       count(*) AS recipients,
       count(*) FILTER (WHERE m.status IN ('accepted', 'delivered', 'complained')) AS delivered,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM engagement_firsts f WHERE f.tenant_id = m.tenant_id
             AND f.message_id = m.id AND f.metric = 'opened.human' AND f.link_id = 0)) AS opens,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM engagement_firsts f WHERE f.tenant_id = m.tenant_id
             AND f.message_id = m.id AND f.metric = 'clicked.human' AND f.link_id = 0)) AS clicks
FROM messages m
WHERE m.tenant_id = %s AND m.campaign_id = %s AND m.kind = 'campaign' AND m.variant IS NOT NULL
GROUP BY m.variant
"""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Return the Wilson score interval of ``successes`` in ``trials``; None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # NOTE: the bounds meet 0 and 1 exactly at p = 0 and 1; rounding would miss them.
    low = 0.0 if successes <= 0 else max(0.0, centre - margin)
    high = 1.0 if successes >= trials else min(1.0, centre + margin)
    return low, high


def rate(successes: int, trials: int) -> dict[str, float | None]:
    """Return ``{"value", "low", "high"}`` of a rate (all None without trials)."""
    interval = wilson_interval(successes, trials)
    if interval is None:
        return {"value": None, "low": None, "high": None}
    return {"value": successes / trials, "low": interval[0], "high": interval[1]}


def variant_counts(database: Any, tenant_id: uuid.UUID | str,
                   campaign_id: uuid.UUID | str) -> dict[str, dict[str, int]]:
    """Return {variant: {recipients, delivered, opens, clicks}} (in the caller's transaction)."""
    rows = database.execute_sql(_STATS_SQL, (str(tenant_id), str(campaign_id))).fetchall()
    return {variant: {"recipients": int(recipients), "delivered": int(delivered),
                      "opens": int(opens), "clicks": int(clicks)}
            for variant, recipients, delivered, opens, clicks in rows}


def variant_results(counts: dict[str, int]) -> dict[str, Any]:
    """Return a variant's counts with its open and click rates and their intervals."""
    delivered = counts["delivered"]
    return {**counts, "open_rate": rate(counts["opens"], delivered),
            "click_rate": rate(counts["clicks"], delivered)}
