"""Campaign and tenant statistics, read from the incremental rollups only.

Never a COUNT over raw events at read time: every number here is a sum over
``campaign_rollups`` rows (hourly buckets), which ``record_events`` keeps up
to date as events arrive. Call inside the tenant's ``tenant_tx``.
"""

from swiftmail_core.analytics.queries import (
    campaign_domains,
    campaign_links,
    campaign_summary,
    campaign_timeseries,
    tenant_domains,
    tenant_summary,
)

__all__ = [
    "campaign_domains",
    "campaign_links",
    "campaign_summary",
    "campaign_timeseries",
    "tenant_domains",
    "tenant_summary",
]
