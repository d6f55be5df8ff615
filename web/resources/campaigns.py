"""``/v1/campaigns``: CRUD, lifecycle actions, the per-recipient ledger, stats.

State changes go through ``swiftmail_core.sending.lifecycle`` (one
conditional UPDATE each, so racing callers get a 409); those functions open
their own ``tenant_tx``, so the action resources opt out of the middleware's.
Content and settings can be edited only while a campaign is a draft or
scheduled.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterable
from typing import Any, cast

import falcon
from peewee import Cast, Value, fn
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate, public_cursor
from swiftmail_web.resources.common import (
    BOOLEAN,
    INTEGER,
    NULLABLE_TIMESTAMP,
    OBJECT,
    STRING,
    TIMESTAMP,
    UUID,
    created,
    get_or_404,
    principal,
    tenant_id,
)

from swiftmail_core import parent_rows
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.models import (
    Campaign,
    CampaignRollup,
    MailingList,
    Message,
    Segment,
    SendingDomain,
    Template,
    utcnow,
)
from swiftmail_core.public_ids import PublicIds, public_ids
from swiftmail_core.sending import lifecycle
from swiftmail_core.sending.send_time import LOCAL_TIME_PATTERN

_HEADER_NAME = re.compile(r"^X-[A-Za-z0-9-]{1,64}$")
STATUSES = ("draft", "scheduled", "sending", "paused", "sent", "cancelled")
EDITABLE = ("draft", "scheduled")
FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=200),
    template_id=Field("uuid", nullable=True),
    subject=Field("string", max_length=998),
    preheader=Field("string", max_length=500),
    html=Field("string", max_length=512_000),
    text=Field("string", max_length=512_000),
    from_name=Field("string", max_length=200),
    from_email=Field("email"),
    reply_to=Field("string", max_length=254),
    headers=Field("object", description="Extra X- headers; names and values checked."),
    sending_domain_id=Field("uuid", nullable=True),
    transport=Field("string", max_length=64),
    list_ids=Field("uuid_list", max_items=50),
    segment_ids=Field("uuid_list", max_items=20,
                      description="Segments to send to as well as (or instead of) lists."),
    sunset_days=Field("integer", nullable=True, minimum=1, maximum=3650,
                      description="Skip contacts added more than N days ago with no open or "
                      "click in the last N days."),
    local_send_time=Field("local_time", nullable=True,
                          description="Send at this time (HH:MM) on each recipient's clock: "
                          "its timezone attribute, else the tenant's timezone setting, else "
                          "UTC; the first such moment from the start (docs/send-time.md)."),
    tracking_enabled=Field("boolean"),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "campaign"}, "id": UUID, "name": STRING,
    "status": {"type": "string", "enum": list(STATUSES)},
    "template_id": {"type": ["string", "null"], "format": "uuid"}, "subject": STRING,
    "preheader": STRING, "html": STRING, "text": STRING, "from_name": STRING,
    "from_email": STRING, "reply_to": STRING, "headers": OBJECT,
    "sending_domain_id": {"type": ["string", "null"], "format": "uuid"}, "transport": STRING,
    "list_ids": {"type": "array", "items": UUID},
    "segment_ids": {"type": "array", "items": UUID},
    "sunset_days": {"type": ["integer", "null"]}, "tracking_enabled": BOOLEAN,
    "local_send_time": {"type": ["string", "null"], "pattern": LOCAL_TIME_PATTERN},
    "scheduled_at": NULLABLE_TIMESTAMP, "started_at": NULLABLE_TIMESTAMP,
    "finished_at": NULLABLE_TIMESTAMP, "recipient_count": INTEGER,
    "paused_reason": {"type": ["string", "null"],
                      "description": "Why SwiftMail paused the campaign (e.g. its transport "
                      "kept failing); null when a person paused it or it is not paused."},
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
LEDGER_STATUSES = ("queued", "sending", "accepted", "deferred", "delivered", "bounced",
                   "complained", "failed", "suppressed", "cancelled", "expired", "unknown",
                   "held", "waiting")
LEDGER = obj({
    "object": {"type": "string", "const": "message"}, "id": STRING,
    "campaign_id": {"type": ["string", "null"]}, "contact_id": {"type": ["string", "null"]},
    "email": STRING, "kind": STRING, "status": {"type": "string", "enum": list(LEDGER_STATUSES)},
    "attempts": INTEGER, "next_attempt_at": TIMESTAMP, "message_id": {"type": ["string", "null"]},
    "transport": STRING, "provider_message_id": {"type": ["string", "null"]},
    "last_error": {"type": ["string", "null"]},
    "variant": {"type": ["string", "null"],
                "description": "The A/B test variant this recipient got (A to E); null "
                "outside a test, and while the recipient waits for the winner."},
    "created_at": TIMESTAMP, "sent_at": NULLABLE_TIMESTAMP, "updated_at": TIMESTAMP,
})
SCHEDULE_STATS = obj({
    "local_send_time": {"type": ["string", "null"]},
    "timezone_fallbacks": {"type": "integer", "description":
                           "Recipients whose timezone attribute named no known zone "
                           "(they got the tenant's)."},
    "scheduled": {"type": "integer",
                  "description": "Queued or deferred rows not due yet."},
    "per_hour": {"type": "array", "items": obj({"hour": TIMESTAMP, "count": INTEGER}),
                 "description": "The scheduled rows by the UTC hour they are due (48 at most)."},
})
STATS = obj({
    "object": {"type": "string", "const": "campaign_stats"}, "campaign_id": UUID,
    "recipients": INTEGER, "ledger": OBJECT, "metrics": OBJECT, "schedule": SCHEDULE_STATS,
})
#: Hours of the schedule the stats show.
SCHEDULE_HOURS = 48


def serialize(row: Campaign | dict[str, Any]) -> dict[str, Any]:
    """Return the API shape of a campaign (from a row or lifecycle's dict)."""
    data = row if isinstance(row, dict) else row.__data__
    keys = [k for k in SCHEMA["properties"] if k != "object"]
    body = {"object": "campaign", **{k: data.get(k) for k in keys}}
    body["list_ids"] = list(body["list_ids"] or [])
    body["segment_ids"] = list(body.get("segment_ids") or [])
    body["headers"] = body["headers"] or {}
    return body


def serialize_message(row: Message | dict[str, Any], ids: PublicIds) -> dict[str, Any]:
    """Return the API shape of one ledger row (payload excluded, id made public)."""
    values = row if isinstance(row, dict) else row.__data__
    keys = [k for k in LEDGER["properties"] if k not in ("object", "id")]
    tenant = values["tenant_id"]
    return {"object": "message", "id": ids.encode("message", _as_uuid(tenant), values["id"]),
            **{k: values.get(k) for k in keys}}


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _check_references(values: dict[str, Any]) -> None:
    """Refuse ids of lists, templates and domains this tenant cannot see."""
    if values.get("template_id") and not Template.select().where(
            Template.id == values["template_id"]).exists():
        raise ValidationError.for_field("template_id", "no such template")
    if values.get("sending_domain_id") and not SendingDomain.select().where(
            SendingDomain.id == values["sending_domain_id"]).exists():
        raise ValidationError.for_field("sending_domain_id", "no such sending domain")
    list_ids = values.get("list_ids") or []
    if list_ids:
        found = {r.id for r in MailingList.select(MailingList.id).where(
            MailingList.id.in_(list_ids))}
        missing = [str(x) for x in list_ids if x not in found]
        if missing:
            raise ValidationError.for_field("list_ids", f"no such list {missing[0]}")
    for name, value in (values.get("headers") or {}).items():
        if not _HEADER_NAME.match(name):
            raise ValidationError.for_field(f"headers.{name}", "is not a valid header name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValidationError.for_field(f"headers.{name}", "must be a string without CR/LF")
    segment_ids = values.get("segment_ids") or []
    if segment_ids:
        found = {r.id for r in Segment.select(Segment.id).where(Segment.id.in_(segment_ids))}
        missing = [str(x) for x in segment_ids if x not in found]
        if missing:
            raise ValidationError.for_field("segment_ids", f"no such segment {missing[0]}")
    for name in ("list_ids", "segment_ids"):
        if name in values:
            # NOTE: psycopg2 sends a list of strings as text[]; the column is uuid[].
            values[name] = Cast(Value([str(x) for x in values[name] or []], unpack=False),
                                "uuid[]")


class TransportCheck:
    """Refuse a ``transport`` no loaded plugin provides (names the installed ones)."""

    def __init__(self, plugins: Any) -> None:
        self.plugins = plugins

    def __call__(self, values: dict[str, Any]) -> None:
        """Raise ValidationError for an unknown transport name."""
        name = values.get("transport")
        if name is None or self.plugins is None:
            return
        installed = sorted(self.plugins.transports())
        if name not in installed:
            raise ValidationError.for_field(
                "transport", f"no transport {name!r}; installed: {', '.join(installed) or 'none'}")


def _check_content(values: dict[str, Any]) -> None:
    """Compile the content in the sandbox once there is a body (drafts may be empty)."""
    if not (values.get("html") or values.get("text")):
        return
    try:
        from swiftmail_core.rendering import validate_template
    except ImportError:  # pragma: no cover
        return
    validate_template(values.get("subject", ""), values.get("html", ""),
                      values.get("text", ""), values.get("preheader", ""))


class CampaignsResource:
    """The collection: list and create drafts."""

    tag = "campaigns"
    policy = {"GET": access.read("campaigns"), "POST": access.write("campaigns")}
    docs = {
        "GET": Operation("List campaigns", response=page_of(SCHEMA), paginated=True,
                         query=({"name": "status", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": list(STATUSES)}},)),
        "POST": Operation("Create a draft campaign", body=FIELDS, response=SCHEMA, status=201),
    }

    def __init__(self, check_transport: TransportCheck) -> None:
        self.check_transport = check_transport

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List campaigns, oldest first."""
        query = Campaign.select()
        status = req.get_param("status")
        if status is not None:
            if status not in STATUSES:
                raise ValidationError.for_field("status", f"must be one of {', '.join(STATUSES)}")
            query = query.where(Campaign.status == status)
        resp.media = paginate(req, query, Campaign.created_at, Campaign.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a draft."""
        values = FIELDS.parse(read_body(req))
        self.check_transport(values)
        _check_references(values)
        _check_content(values)
        campaign_id = uuid.uuid4()
        now = utcnow()
        Campaign.insert(tenant_id=tenant_id(req), id=campaign_id, status="draft",
                        created_at=now, updated_at=now, **values).execute()
        created(resp, serialize(Campaign.get(Campaign.id == campaign_id)),
                f"/v1/campaigns/{campaign_id}")


class CampaignResource:
    """One campaign: read, edit (draft or scheduled only), delete (draft only)."""

    tag = "campaigns"
    policy = {"GET": access.read("campaigns"), "PATCH": access.write("campaigns"),
              "DELETE": access.write("campaigns", role="admin")}
    docs = {
        "GET": Operation("Get a campaign", response=SCHEMA),
        "PATCH": Operation("Edit a draft or scheduled campaign", body=FIELDS, partial=True,
                           response=SCHEMA),
        "DELETE": Operation("Delete a draft or cancelled campaign", status=204),
    }

    def __init__(self, check_transport: TransportCheck) -> None:
        self.check_transport = check_transport

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return one campaign."""
        resp.media = serialize(get_or_404(Campaign.select(), Campaign.id, campaign_id,
                                          "campaign"))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Change content or settings before sending starts."""
        row = get_or_404(Campaign.select().for_update(), Campaign.id, campaign_id, "campaign")
        values = FIELDS.parse(read_body(req), partial=True)
        if row.status not in EDITABLE:
            raise ConflictError(f"campaign is {row.status}; only draft or scheduled can be edited")
        self.check_transport(values)
        _check_references(values)
        _check_content({**serialize(row), **values})
        if values:
            Campaign.update(updated_at=utcnow(), **values).where(
                Campaign.id == row.id, Campaign.status.in_(EDITABLE)).execute()
        resp.media = serialize(Campaign.get(Campaign.id == row.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Delete a campaign that never sent (draft or cancelled)."""
        row = get_or_404(Campaign.select().for_update(), Campaign.id, campaign_id, "campaign")
        if row.status == "sent":
            raise ConflictError("campaign has been sent: it is kept with its ledger and "
                                "statistics, and cannot be deleted")
        if row.status not in ("draft", "cancelled"):
            raise ConflictError(f"campaign is {row.status}: cancel it first "
                                f"(POST /v1/campaigns/{row.id}/cancel), then delete it")
        parent_rows.delete_campaign(Campaign._meta.database, row.tenant_id, row.id)
        resp.status = 204


SCHEDULE = Fields(scheduled_at=Field("datetime", nullable=True,
                                     description="When to start; omit or null for now."))
TEST = Fields(emails=Field("email_list", required=True, max_items=10),
              variant=Field("string", enum=("A", "B", "C", "D", "E"),
                            description="Send this A/B test variant (docs/ab-tests.md)."))
EMPTY = Fields()


class _Action:
    """A lifecycle action: POST with a small body, answered with the campaign."""

    tag = "campaigns"
    policy = {"POST": access.write("campaigns")}
    body = EMPTY

    def on_post(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Run the action for the caller's tenant."""
        values = self.body.parse(read_body(req))
        try:
            campaign_uuid = uuid.UUID(campaign_id)
        except ValueError as ex:
            raise NotFoundError(f"no campaign {campaign_id}") from ex
        resp.media = self.run(principal(req).tenant_id, campaign_uuid, values)

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Do the action; return the response body."""
        raise NotImplementedError


class ScheduleResource(_Action):
    """``POST .../schedule``: schedule a draft (or reschedule)."""

    body = SCHEDULE
    docs = {"POST": Operation("Schedule (or send now) a campaign", body=SCHEDULE,
                              response=SCHEMA)}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Validate content and schedule."""
        return serialize(lifecycle.schedule_campaign(tenant, campaign_id,
                                                     values.get("scheduled_at")))


class UnscheduleResource(_Action):
    """``POST .../unschedule``: back to draft before it starts."""

    docs = {"POST": Operation("Return a scheduled campaign to draft", body=EMPTY,
                              response=SCHEMA)}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Unschedule."""
        return serialize(lifecycle.unschedule_campaign(tenant, campaign_id))


class PauseResource(_Action):
    """``POST .../pause``."""

    docs = {"POST": Operation("Pause a sending campaign", body=EMPTY, response=SCHEMA)}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Pause."""
        return serialize(lifecycle.pause_campaign(tenant, campaign_id))


class ResumeResource(_Action):
    """``POST .../resume``."""

    docs = {"POST": Operation("Resume a paused campaign", body=EMPTY, response=SCHEMA)}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Resume."""
        return serialize(lifecycle.resume_campaign(tenant, campaign_id))


class CancelResource(_Action):
    """``POST .../cancel``: queued rows become cancelled."""

    policy = {"POST": access.write("campaigns", role="admin")}
    docs = {"POST": Operation("Cancel a campaign", body=EMPTY, response=SCHEMA)}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Cancel."""
        return serialize(lifecycle.cancel_campaign(tenant, campaign_id))


class TestSendResource(_Action):
    """``POST .../test``: send the campaign to up to 10 addresses."""

    body = TEST
    docs = {"POST": Operation("Send test messages", body=TEST, response=obj({
        "object": {"type": "string", "const": "test_send"},
        "message_ids": {"type": "array", "items": STRING}}))}

    def __init__(self, ids: PublicIds) -> None:
        self.ids = ids

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Queue test messages."""
        made = lifecycle.test_send(tenant, campaign_id, values["emails"], values.get("variant"))
        return {"object": "test_send",
                "message_ids": [self.ids.encode("message", tenant, ident) for ident in made]}


class ResendFailedResource(_Action):
    """``POST .../resend-failed``: requeue failed and expired rows of a sent campaign."""

    docs = {"POST": Operation("Resend to failed recipients", body=EMPTY, response=obj({
        "object": {"type": "string", "const": "resend"}, "requeued": INTEGER}))}

    def run(self, tenant: uuid.UUID, campaign_id: uuid.UUID, values: dict[str, Any]) -> Any:
        """Requeue."""
        return {"object": "resend", "requeued": lifecycle.resend_failed(tenant, campaign_id)}


class LedgerResource:
    """``GET .../messages``: the per-recipient ledger of a campaign."""

    tag = "campaigns"
    policy = {"GET": access.read("campaigns")}
    docs = {"GET": Operation(
        "List the campaign's per-recipient ledger", response=page_of(LEDGER), paginated=True,
        query=({"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(LEDGER_STATUSES)}},))}

    def __init__(self, ids: PublicIds) -> None:
        self.ids = ids

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """List ledger rows, oldest first."""
        row = get_or_404(Campaign.select(), Campaign.id, campaign_id, "campaign")
        query = Message.select().where(Message.campaign_id == row.id)
        status = req.get_param("status")
        if status is not None:
            if status not in LEDGER_STATUSES:
                raise ValidationError.for_field("status", "is not a ledger status")
            query = query.where(Message.status == status)
        tenant = principal(req).tenant_id
        resp.media = paginate(req, query, Message.created_at, Message.id,
                              lambda message: serialize_message(message, self.ids),
                              cursor_value=public_cursor(self.ids, "message", tenant))


class StatsResource:
    """``GET .../stats``: ledger counts by status and rollup totals by metric."""

    tag = "campaigns"
    policy = {"GET": access.read("campaigns")}
    docs = {"GET": Operation("Get campaign statistics (totals)", response=STATS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, campaign_id: str) -> None:
        """Return totals; time series and breakdowns come with the analytics endpoints."""
        row = get_or_404(Campaign.select(), Campaign.id, campaign_id, "campaign")
        ledger = dict(cast(Iterable[tuple[str, int]], (
            Message.select(Message.status, fn.COUNT(Message.id))
            .where(Message.campaign_id == row.id, Message.kind == "campaign")
            .group_by(Message.status).tuples())))
        metrics = dict(cast(Iterable[tuple[str, int]], (
            CampaignRollup.select(CampaignRollup.metric, fn.SUM(CampaignRollup.value))
            .where(CampaignRollup.campaign_id == row.id, CampaignRollup.dimension == "")
            .group_by(CampaignRollup.metric).tuples())))
        resp.media = {"object": "campaign_stats", "campaign_id": row.id,
                      "recipients": row.recipient_count,
                      "ledger": {k: int(v) for k, v in ledger.items()},
                      "metrics": {k: int(v) for k, v in metrics.items()},
                      "schedule": _schedule(row)}


def _schedule(row: Campaign) -> dict[str, Any]:
    """Return how many of the campaign's rows wait for their send time, by hour."""
    hour = fn.date_trunc("hour", Message.next_attempt_at, "UTC")
    per_hour = list(
        Message.select(hour, fn.COUNT(Message.id))
        .where(Message.campaign_id == row.id, Message.kind == "campaign",
               Message.status.in_(("queued", "deferred")), Message.next_attempt_at > fn.now())
        .group_by(hour).order_by(hour).tuples())
    return {"local_send_time": row.local_send_time,
            "timezone_fallbacks": int(row.timezone_fallbacks),
            "scheduled": sum(int(count) for _, count in per_hour),
            "per_hour": [{"hour": _utc(at), "count": int(count)}
                         for at, count in per_hour[:SCHEDULE_HOURS]]}


def _utc(value: Any) -> Any:
    """Read a naive timestamp (``date_trunc`` in UTC gives one) as UTC."""
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value


MESSAGE = Fields(
    to=Field("email", required=True),
    from_email=Field("email", required=True),
    from_name=Field("string", max_length=200),
    reply_to=Field("string", max_length=254),
    template_id=Field("uuid"),
    subject=Field("string", max_length=998),
    html=Field("string", max_length=512_000),
    text=Field("string", max_length=512_000),
    data=Field("object", description="What the template sees as ``data``."),
    transport=Field("string", max_length=64),
)


class MessagesResource:
    """``POST /v1/messages``: queue one transactional message."""

    tag = "messages"
    policy = {"POST": access.Access("editor", "messages:write")}
    docs = {"POST": Operation("Send a transactional message", body=MESSAGE, response=LEDGER,
                              status=202)}

    def __init__(self, check_transport: TransportCheck, ids: PublicIds) -> None:
        self.check_transport = check_transport
        self.ids = ids

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Write the ledger row; the outbox worker sends it."""
        values = MESSAGE.parse(read_body(req))
        self.check_transport(values)
        row = lifecycle.send_transactional(principal(req).tenant_id, **values)
        resp.status = 202
        resp.media = serialize_message(row, self.ids)


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the campaign and message routes."""
    base = "/v1/campaigns/{campaign_id}"
    check_transport = TransportCheck(services.get("plugins"))
    ids = public_ids(services["settings"].secret_key)
    return [
        ("/v1/campaigns", CampaignsResource(check_transport)),
        (base, CampaignResource(check_transport)),
        (base + "/schedule", ScheduleResource()),
        (base + "/unschedule", UnscheduleResource()),
        (base + "/pause", PauseResource()),
        (base + "/resume", ResumeResource()),
        (base + "/cancel", CancelResource()),
        (base + "/test", TestSendResource(ids)),
        (base + "/resend-failed", ResendFailedResource()),
        (base + "/messages", LedgerResource(ids)),
        (base + "/stats", StatsResource()),
        ("/v1/messages", MessagesResource(check_transport, ids)),
    ]
