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

_STATS_SQL = """
SELECT variant, count(*),
       count(*) FILTER (WHERE status IN ('accepted', 'delivered', 'complained'))
FROM messages
WHERE tenant_id = %s AND campaign_id = %s AND kind = 'campaign' AND variant IS NOT NULL
GROUP BY variant
"""
#: Human first opens and clicks by variant, from the campaign's engagement firsts.
_ENGAGED_SQL = """
SELECT m.variant, count(*) FILTER (WHERE f.metric = 'opened.human'),
       count(*) FILTER (WHERE f.metric = 'clicked.human')
FROM engagement_firsts f
JOIN messages m ON m.tenant_id = f.tenant_id AND m.id = f.message_id
WHERE f.tenant_id = %s AND f.campaign_id = %s AND f.link_id = 0
  AND f.metric IN ('opened.human', 'clicked.human')
  AND m.kind = 'campaign' AND m.variant IS NOT NULL
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
    params = (str(tenant_id), str(campaign_id))
    counts = {variant: {"recipients": int(recipients), "delivered": int(delivered),
                        "opens": 0, "clicks": 0}
              for variant, recipients, delivered in database.execute_sql(_STATS_SQL, params)}
    for variant, opens, clicks in database.execute_sql(_ENGAGED_SQL, params):
        if variant in counts:
            counts[variant].update(opens=int(opens), clicks=int(clicks))
    return counts


def variant_results(counts: dict[str, int]) -> dict[str, Any]:
    """Return a variant's counts with its open and click rates and their intervals."""
    delivered = counts["delivered"]
    return {**counts, "open_rate": rate(counts["opens"], delivered),
            "click_rate": rate(counts["clicks"], delivered)}
