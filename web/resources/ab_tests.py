"""``/v1/campaigns/{id}/ab``: a campaign's A/B test, its results and its winner.

``PUT`` replaces the test (2 to 5 variants, the test share, how and when the
winner is picked) while the campaign is a draft or scheduled; ``GET`` shows
the settings and each variant's results with 95% Wilson intervals;
``DELETE`` drops the test; ``POST .../ab/winner`` picks the winner by hand.
The work is in ``swiftmail_core.ab_tests``; these classes parse and
serialize. APPSEC: every query runs in the caller's tenant transaction, so
another tenant's campaign is simply not found.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj
from swiftmail_web.resources.common import (
    INTEGER,
    NULLABLE_TIMESTAMP,
    STRING,
    UUID,
    get_or_404,
    principal,
)

from swiftmail_core.ab_tests import decision, stats, variants
from swiftmail_core.db import app_db
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.models import Campaign

VARIANT_FIELDS = Fields(
    name=Field("string", max_length=200, description="A label for people."),
    subject=Field("string", nullable=True, max_length=998),
    from_name=Field("string", nullable=True, max_length=200),
    preheader=Field("string", nullable=True, max_length=500),
    html=Field("string", nullable=True, max_length=512_000),
    text=Field("string", nullable=True, max_length=512_000),
)
FIELDS = Fields(
    variants=Field("object_list", required=True, max_items=variants.MAX_VARIANTS,
                   description="2 to 5 variants, keyed A to E in this order; a field a "
                   "variant omits (or sets to null) is the campaign's."),
    test_percent=Field("integer", minimum=1, maximum=100,
                       description="Share of the audience in the test (default 20); the "
                       "rest is sent the winner."),
    metric=Field("string", enum=variants.METRICS,
                 description="How the winner is picked: unique human opens or clicks per "
                 "delivered message, or manual (POST .../ab/winner). Default opens."),
    decide_after_seconds=Field("integer", minimum=0, maximum=2_592_000,
                               description="How long after the test starts the winner is "
                               "picked (opens, clicks). Default 14400 (4 hours)."),
)
WINNER = Fields(variant=Field("string", required=True, enum=variants.KEYS,
                              description="The winning variant's key."))
RATE = {"type": "object", "properties": {
    "value": {"type": ["number", "null"]}, "low": {"type": ["number", "null"]},
    "high": {"type": ["number", "null"]}},
    "required": ["value", "low", "high"],
    "description": "A rate per delivered message and its 95% Wilson score interval."}
NULLABLE_STRING = {"type": ["string", "null"]}
VARIANT = obj({
    "key": STRING, "name": STRING, "subject": NULLABLE_STRING, "from_name": NULLABLE_STRING,
    "preheader": NULLABLE_STRING, "html": NULLABLE_STRING, "text": NULLABLE_STRING,
    "recipients": INTEGER, "delivered": INTEGER, "unique_opens": INTEGER,
    "unique_clicks": INTEGER, "open_rate": RATE, "click_rate": RATE,
})
PHASES = ("not_started", "testing", "waiting_for_choice", "decided", "ended")
SCHEMA = obj({
    "object": {"type": "string", "const": "ab_test"}, "campaign_id": UUID,
    "phase": {"type": "string", "enum": list(PHASES)},
    "test_percent": INTEGER, "metric": {"type": "string", "enum": list(variants.METRICS)},
    "decide_after_seconds": INTEGER, "decide_at": NULLABLE_TIMESTAMP,
    "winner": NULLABLE_STRING,
    "decided_by": {"type": ["string", "null"], "enum": ["opens", "clicks", "manual", None]},
    "decided_at": NULLABLE_TIMESTAMP,
    "decided_on": {"type": ["object", "null"],
                   "description": "Each variant's results when the winner was chosen, by key "
                   "(recipients, delivered, unique_opens, unique_clicks, open_rate, "
                   "click_rate); null before the decision."},
    "waiting": {"type": "integer", "description": "Recipients waiting for the winner."},
    "variants": {"type": "array", "items": VARIANT},
})
_BODY_SCHEMA = FIELDS.json_schema()
_BODY_SCHEMA["properties"]["variants"] = {
    **_BODY_SCHEMA["properties"]["variants"], "minItems": variants.MIN_VARIANTS,
    "items": VARIANT_FIELDS.json_schema()}


def parse(body: Any) -> tuple[variants.AbSettings, list[dict[str, Any]]]:
    """Return the settings and variants of a PUT body; errors name ``variants[i].field``."""
    values = FIELDS.parse(body)
    parsed = []
    for index, item in enumerate(values["variants"]):
        try:
            parsed.append(VARIANT_FIELDS.parse(item))
        except ValidationError as ex:
            errors = [{**e, "field": f"variants[{index}].{e['field']}".rstrip(".")}
                      for e in ex.errors]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
            raise ValidationError(f"invalid request body: {summary}", errors=errors) from ex
    settings = variants.AbSettings(
        test_percent=values.get("test_percent", variants.DEFAULT_TEST_PERCENT),
        metric=values.get("metric", "opens"),
        decide_after_seconds=values.get("decide_after_seconds",
                                        variants.DEFAULT_DECIDE_AFTER_SECONDS))
    return settings, parsed


def _phase(campaign: Campaign) -> str:
    if campaign.ab_winner is not None:
        return "decided"
    if campaign.status in ("sent", "cancelled"):
        return "ended"  # finished or cancelled before a winner was chosen
    if campaign.audience_resolved_at is None:
        return "not_started"
    return "waiting_for_choice" if campaign.ab_metric == "manual" else "testing"


def show(tenant: uuid.UUID, campaign_id: uuid.UUID) -> dict[str, Any]:
    """Return the API shape of a campaign's A/B test (in the caller's tenant_tx)."""
    campaign = Campaign.select().where(Campaign.tenant_id == tenant,
                                       Campaign.id == campaign_id).first()
    if campaign is None or campaign.ab_metric is None:
        raise NotFoundError(f"campaign {campaign_id} has no A/B test")
    counts = stats.variant_counts(app_db, tenant, campaign_id)
    (waiting,) = app_db.execute_sql(
        "SELECT count(*) FROM messages WHERE tenant_id = %s AND campaign_id = %s "
        "AND kind = 'campaign' AND status = 'waiting'", (str(tenant), str(campaign_id))).fetchone()
    decide_at = None
    if campaign.audience_resolved_at is not None and campaign.ab_metric != "manual":
        decide_at = campaign.audience_resolved_at + datetime.timedelta(
            seconds=campaign.ab_decide_after_seconds)
    shown = []
    for key, variant in variants.load_variants(app_db, tenant, campaign_id).items():
        found = counts.get(key, {"recipients": 0, "delivered": 0, "opens": 0, "clicks": 0})
        shown.append({**variant, **_results(found)})
    return {"object": "ab_test", "campaign_id": campaign.id, "phase": _phase(campaign),
            "test_percent": campaign.ab_test_percent, "metric": campaign.ab_metric,
            "decide_after_seconds": campaign.ab_decide_after_seconds, "decide_at": decide_at,
            "winner": campaign.ab_winner, "decided_by": campaign.ab_decided_by,
            "decided_at": campaign.ab_decided_at,
            "decided_on": _decided_on(campaign.ab_decided_on),
            "waiting": int(waiting), "variants": shown}


def _results(counts: dict[str, int]) -> dict[str, Any]:
    results = stats.variant_results(counts)
    return {"recipients": results["recipients"], "delivered": results["delivered"],
            "unique_opens": results["opens"], "unique_clicks": results["clicks"],
            "open_rate": results["open_rate"], "click_rate": results["click_rate"]}


def _decided_on(snapshot: dict[str, dict[str, int]] | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    return {key: _results(counts) for key, counts in sorted(snapshot.items())}


def _campaign_uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as ex:
        raise NotFoundError(f"no campaign {raw}") from ex


class AbTestResource:
    """``/v1/campaigns/{id}/ab``: show, replace or drop the campaign's A/B test."""

    tag = "campaigns"
    policy = {"GET": access.read("campaigns"), "PUT": access.write("campaigns"),
              "DELETE": access.write("campaigns")}
    docs = {
        "GET": Operation("Get a campaign's A/B test with each variant's results",
                         response=SCHEMA),
        "PUT": Operation("Set a draft or scheduled campaign's A/B test", body=FIELDS,
                         body_schema=_BODY_SCHEMA, response=SCHEMA),
        "DELETE": Operation("Drop a draft or scheduled campaign's A/B test", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return the test, its variants and their results."""
        resp.media = show(principal(req).tenant_id, _campaign_uuid(campaign_id))

    def on_put(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Replace the test (only while the campaign is a draft or scheduled)."""
        settings, given = parse(read_body(req))
        row = get_or_404(Campaign.select(), Campaign.id, campaign_id, "campaign")
        tenant = principal(req).tenant_id
        variants.set_ab_test(tenant, row.id, settings, given)
        resp.media = show(tenant, row.id)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Drop the test: the campaign sends its own content to everyone."""
        variants.remove_ab_test(principal(req).tenant_id, _campaign_uuid(campaign_id))
        resp.status = 204


class AbWinnerResource:
    """``POST /v1/campaigns/{id}/ab/winner``: pick the winner by hand."""

    tag = "campaigns"
    policy = {"POST": access.write("campaigns")}
    docs = {"POST": Operation("Choose the A/B test's winner; the rest of the audience gets it",
                              body=WINNER, response=SCHEMA)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Record the winner (once) and queue the waiting recipients with it."""
        values = WINNER.parse(read_body(req))
        tenant = principal(req).tenant_id
        campaign_uuid = _campaign_uuid(campaign_id)
        decision.choose_winner(tenant, campaign_uuid, values["variant"])
        resp.media = show(tenant, campaign_uuid)


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the A/B test routes."""
    base = "/v1/campaigns/{campaign_id}/ab"
    return [(base, AbTestResource()), (base + "/winner", AbWinnerResource())]
