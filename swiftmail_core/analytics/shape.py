"""Turn rollup metric counters into the documented stats shape."""

from __future__ import annotations

from collections.abc import Mapping

BOUNCE_CLASSES = ("hard", "soft", "policy", "mailbox_full", "throttled", "expired")


def _engagement(counts: Mapping[str, int], kind: str) -> dict[str, dict[str, int]]:
    return {
        audience: {"total": int(counts.get(f"{kind}.{audience}", 0)),
                   "unique": int(counts.get(f"{kind}.unique.{audience}", 0))}
        for audience in ("human", "machine")
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def stats_from_counts(counts: Mapping[str, int]) -> dict:
    """Return sent/delivered/bounces/opens/clicks... from metric totals."""
    bounced = {cls: int(counts.get(f"bounced.{cls}", 0)) for cls in BOUNCE_CLASSES}
    bounced_total = sum(bounced.values()) + int(counts.get("bounced", 0))
    delivered = int(counts.get("delivered", 0))
    opens = _engagement(counts, "opened")
    clicks = _engagement(counts, "clicked")
    return {
        "sent": int(counts.get("accepted", 0)),
        "delivered": delivered,
        "deferred": int(counts.get("deferred", 0)),
        "bounced": {"total": bounced_total, **bounced},
        "expired": int(counts.get("expired", 0)),
        "complaints": int(counts.get("complained", 0)),
        "unsubscribes": int(counts.get("unsubscribed", 0)),
        "opens": opens,
        "clicks": clicks,
        "rates": {
            "unique_open_rate_human": _rate(opens["human"]["unique"], delivered),
            "unique_click_rate_human": _rate(clicks["human"]["unique"], delivered),
            "bounce_rate": _rate(bounced_total, delivered + bounced_total),
            "complaint_rate": _rate(int(counts.get("complained", 0)), delivered),
        },
    }


def delivery_by_domain(counts: Mapping[str, int]) -> dict:
    """Return the per-domain delivery shape from that domain's metric totals."""
    bounced = {cls: int(counts.get(f"bounced.{cls}", 0)) for cls in BOUNCE_CLASSES}
    return {
        "delivered": int(counts.get("delivered", 0)),
        "deferred": int(counts.get("deferred", 0)),
        "bounced": {"total": sum(bounced.values()) + int(counts.get("bounced", 0)), **bounced},
        "expired": int(counts.get("expired", 0)),
    }
