"""``/v1/analytics``: campaign and tenant statistics from rollups, and CSV export.

Every number comes from ``swiftmail_core.analytics`` (sums over the hourly
rollups, never a count over raw events). Each responder runs inside
``analytics_tx`` of the caller's tenant (``on_replica``), not the request's
``tenant_tx``: read-only, on the ``analytics_database_url`` replica when one is
set (the numbers then lag by its replay lag, docs/availability.md), with the
same row-level security, so another tenant's campaign is a 404.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import parse_uuid
from swiftmail_web.openapi import Operation
from swiftmail_web.resources.common import principal

from swiftmail_core import analytics
from swiftmail_core.analytics.export import domains_csv, series_csv
from swiftmail_core.db import analytics_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.public_ids import PublicIds, public_ids

STATS = {"type": "object"}
RANGE_QUERY = (
    {"name": "from", "in": "query", "required": True,
     "schema": {"type": "string", "format": "date-time"},
     "description": "Start (inclusive), ISO 8601; a date means its midnight UTC."},
    {"name": "to", "in": "query", "required": True,
     "schema": {"type": "string", "format": "date-time"},
     "description": "End (exclusive), ISO 8601."},
)
INTERVAL_QUERY = ({"name": "interval", "in": "query", "required": False,
                   "schema": {"type": "string", "enum": ["hour", "day"]}},)
READ = {"GET": access.read("analytics")}


def _moment(req: falcon.Request, name: str) -> datetime.datetime:
    raw = req.get_param(name)
    if not raw:
        raise ValidationError.for_field(name, "is required (ISO 8601 date or date-time)")
    try:
        value = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as ex:
        raise ValidationError.for_field(name, "must be an ISO 8601 date or date-time") from ex
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def on_replica(responder: Callable[..., None]) -> Callable[..., None]:
    """Run a statistics responder inside ``analytics_tx`` of the caller's tenant."""
    @functools.wraps(responder)
    def wrapped(self: Any, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        # APPSEC: the tenant is the credential's, never the URL's.
        with analytics_tx(principal(req).tenant_id):
            responder(self, req, resp, **params)
    return wrapped


def _csv(resp: falcon.Response, text: str, filename: str) -> None:
    resp.content_type = "text/csv; charset=utf-8"
    resp.set_header("Content-Disposition", f'attachment; filename="{filename}"')
    resp.text = text


class CampaignStatsResource:
    """Totals of one campaign."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get a campaign's statistics (human and machine apart)",
                             response=STATS)}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return sent, delivered, bounces by class, opens, clicks, rates."""
        resp.media = analytics.campaign_summary(parse_uuid(campaign_id, "campaign"))


class CampaignTimeseriesResource:
    """One campaign's metrics per hour or day."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get a campaign's statistics over time", response=STATS,
                             query=INTERVAL_QUERY)}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return the time series."""
        resp.media = analytics.campaign_timeseries(
            parse_uuid(campaign_id, "campaign"), req.get_param("interval") or "hour")


class CampaignLinksResource:
    """Clicks per link of one campaign."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get clicks per link", response=STATS)}

    def __init__(self, ids: PublicIds) -> None:
        self.ids = ids

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return total and unique clicks per link (link ids made public)."""
        stats = analytics.campaign_links(parse_uuid(campaign_id, "campaign"))
        tenant = principal(req).tenant_id
        for link in stats["data"]:
            link["link_id"] = self.ids.encode("link", tenant, link["link_id"])
        resp.media = stats


class CampaignDomainsResource:
    """Delivery per recipient domain of one campaign."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get delivery per recipient domain", response=STATS)}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return delivered, deferred, bounced per domain."""
        resp.media = analytics.campaign_domains(parse_uuid(campaign_id, "campaign"))


class CampaignExportResource:
    """CSV of one campaign's time series."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = {"GET": access.read("analytics")}
    docs = {"GET": Operation("Export a campaign's statistics as CSV", query=INTERVAL_QUERY,
                             response={"type": "string"}, response_type="text/csv")}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return the time series as CSV (one row per bucket)."""
        campaign = parse_uuid(campaign_id, "campaign")
        series = analytics.campaign_timeseries(campaign, req.get_param("interval") or "day")
        _csv(resp, series_csv(series["data"]), f"campaign-{campaign}.csv")


class TenantStatsResource:
    """The tenant's totals over a date range."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get the tenant's statistics over a date range", response=STATS,
                             query=RANGE_QUERY)}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return totals and a daily series."""
        resp.media = analytics.tenant_summary(_moment(req, "from"), _moment(req, "to"))


class TenantDomainsResource:
    """Delivery per recipient domain over a date range."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation("Get delivery per recipient domain over a date range",
                             response=STATS, query=RANGE_QUERY)}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return which providers deliver, defer or bounce."""
        resp.media = analytics.tenant_domains(_moment(req, "from"), _moment(req, "to"))


class TenantExportResource:
    """CSV of the tenant's daily series (or domains) over a date range."""

    tag = "analytics"
    tenant_transaction = False  # analytics_tx instead (on_replica)
    policy = READ
    docs = {"GET": Operation(
        "Export the tenant's statistics as CSV", response={"type": "string"},
        response_type="text/csv",
        query=(*RANGE_QUERY, {"name": "by", "in": "query", "required": False,
                              "schema": {"type": "string", "enum": ["day", "domain"]}}))}

    @on_replica
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return one row per day, or per domain with ``by=domain``."""
        start, end = _moment(req, "from"), _moment(req, "to")
        if req.get_param("by") == "domain":
            _csv(resp, domains_csv(analytics.tenant_domains(start, end)["data"]), "domains.csv")
            return
        _csv(resp, series_csv(analytics.tenant_summary(start, end)["daily"]), "daily.csv")


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the analytics routes."""
    base = "/v1/analytics/campaigns/{campaign_id}"
    return [
        (base, CampaignStatsResource()),
        (f"{base}/timeseries", CampaignTimeseriesResource()),
        (f"{base}/links", CampaignLinksResource(public_ids(services["settings"].secret_key))),
        (f"{base}/domains", CampaignDomainsResource()),
        (f"{base}/export.csv", CampaignExportResource()),
        ("/v1/analytics/tenant", TenantStatsResource()),
        ("/v1/analytics/domains", TenantDomainsResource()),
        ("/v1/analytics/export.csv", TenantExportResource()),
    ]
