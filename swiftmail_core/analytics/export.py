"""CSV exports of statistics: one row per bucket (or per domain), flat columns."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from swiftmail_core.analytics.shape import stats_from_counts
from swiftmail_core.timestamps import rfc3339

SERIES_COLUMNS = (
    "bucket", "sent", "delivered", "deferred", "bounced", "bounced_hard", "bounced_soft",
    "expired", "complaints", "unsubscribes", "opens_human", "opens_unique_human",
    "opens_machine", "opens_unique_machine", "clicks_human", "clicks_unique_human",
    "clicks_machine", "clicks_unique_machine",
)


def _flat(stats: dict) -> list[object]:
    return [
        stats["sent"], stats["delivered"], stats["deferred"], stats["bounced"]["total"],
        stats["bounced"]["hard"], stats["bounced"]["soft"], stats["expired"],
        stats["complaints"], stats["unsubscribes"],
        stats["opens"]["human"]["total"], stats["opens"]["human"]["unique"],
        stats["opens"]["machine"]["total"], stats["opens"]["machine"]["unique"],
        stats["clicks"]["human"]["total"], stats["clicks"]["human"]["unique"],
        stats["clicks"]["machine"]["total"], stats["clicks"]["machine"]["unique"],
    ]


def _safe(value: object) -> object:
    # APPSEC: no spreadsheet formulas from data (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def series_csv(series: Iterable[dict]) -> str:
    """Return a time series (``{"bucket", "metrics"}`` items) as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(SERIES_COLUMNS)
    for item in series:
        writer.writerow([rfc3339(item["bucket"]), *_flat(stats_from_counts(item["metrics"]))])
    return out.getvalue()


def domains_csv(domains: Iterable[dict]) -> str:
    """Return per-domain delivery rows as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("domain", "delivered", "deferred", "bounced", "bounced_hard",
                     "bounced_soft", "expired"))
    for row in domains:
        writer.writerow([_safe(row["domain"]), row["delivered"], row["deferred"],
                         row["bounced"]["total"], row["bounced"]["hard"],
                         row["bounced"]["soft"], row["expired"]])
    return out.getvalue()
