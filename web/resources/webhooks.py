"""``/v1/webhooks``: CRUD, secret rotation, delivery log.

The signing secret is generated here, stored encrypted
(``swiftmail_core.crypto.encrypt``) and shown only in the create and rotate
responses.
"""

from __future__ import annotations

import secrets
import urllib.parse
import uuid
from typing import Any

import falcon
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

from swiftmail_core import crypto
from swiftmail_core.errors import ValidationError
from swiftmail_core.models import Webhook, WebhookDelivery, utcnow
from swiftmail_core.public_ids import PublicIds, public_ids
from swiftmail_core.settings import Settings
from swiftmail_core.webhooks.urls import UrlPolicy, check_webhook_url

EVENT_TYPES = ("accepted", "delivered", "deferred", "bounced", "expired", "opened", "clicked",
               "complained", "unsubscribed", "subscribed", "confirmed", "webhook_disabled",
               "sending_paused", "sending_resumed")
FIELDS = Fields(
    url=Field("string", required=True, max_length=2000),
    event_types=Field("string_list", enum=EVENT_TYPES, max_items=len(EVENT_TYPES),
                      description="Empty means every event type."),
    enabled=Field("boolean"),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "webhook"}, "id": UUID, "url": STRING,
    "event_types": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
    "enabled": BOOLEAN, "disabled_reason": {"type": ["string", "null"]},
    "consecutive_failures": INTEGER,
    "paused_until": {**NULLABLE_TIMESTAMP, "description":
                     "Deliveries wait until then after a failure (backoff); null when not paused."},
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
WITH_SECRET = obj({**SCHEMA["properties"], "secret": {
    "type": "string", "description": "The signing secret: shown in this response only."}})
DELIVERY = obj({
    "object": {"type": "string", "const": "webhook_delivery"}, "id": STRING,
    "event_type": STRING, "payload": OBJECT, "status": STRING, "attempts": INTEGER,
    "response_status": {"type": ["integer", "null"]},
    "response_excerpt": {"type": ["string", "null"]}, "next_attempt_at": TIMESTAMP,
    "created_at": TIMESTAMP, "updated_at": NULLABLE_TIMESTAMP,
})


def new_secret() -> str:
    """Return a fresh signing secret."""
    return "whsec_" + secrets.token_urlsafe(32)


def _url(value: str, settings: Settings) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError.for_field("url", "must be an absolute http(s) URL")
    # APPSEC: SSRF check at save time (https only, every resolved address
    # public); the dispatcher checks again at every delivery.
    check_webhook_url(value, UrlPolicy.from_settings(settings))
    return value


def serialize(row: Webhook) -> dict[str, Any]:
    """Return the API shape of a webhook (never its secret)."""
    return {"object": "webhook", "id": row.id, "url": row.url,
            "event_types": list(row.event_types or ()), "enabled": row.enabled,
            "disabled_reason": row.disabled_reason,
            "consecutive_failures": row.consecutive_failures,
            "paused_until": row.paused_until,
            "created_at": row.created_at, "updated_at": row.updated_at}


def serialize_delivery(row: WebhookDelivery, ids: PublicIds) -> dict[str, Any]:
    """Return the API shape of one delivery attempt record (ids made public)."""
    tenant = row.tenant_id if isinstance(row.tenant_id, uuid.UUID) else uuid.UUID(
        str(row.tenant_id))
    return {"object": "webhook_delivery", "id": ids.encode("webhook_delivery", tenant, row.id),
            "event_type": row.event_type,
            "payload": ids.public_event_payload(tenant, row.payload or {}), "status": row.status, "attempts": row.attempts,
            "response_status": row.response_status, "response_excerpt": row.response_excerpt,
            "next_attempt_at": row.next_attempt_at, "created_at": row.created_at,
            "updated_at": row.updated_at}


class WebhooksResource:
    """The collection: list and create."""

    #: APPSEC: shown once; never stored for Idempotency-Key replays.
    replay_omits = ("secret",)
    tag = "webhooks"
    policy = {"GET": access.read("webhooks"), "POST": access.write("webhooks", role="admin")}
    docs = {
        "GET": Operation("List webhooks", response=page_of(SCHEMA), paginated=True),
        "POST": Operation("Create a webhook; the secret is in this response only",
                          body=FIELDS, response=WITH_SECRET, status=201),
    }

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List webhooks, oldest first."""
        resp.media = paginate(req, Webhook.select(), Webhook.created_at, Webhook.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a webhook with a fresh secret (encrypted at rest)."""
        values = FIELDS.parse(read_body(req))
        values["url"] = _url(values["url"], self.settings)
        secret = new_secret()
        webhook_id = uuid.uuid4()
        now = utcnow()
        Webhook.insert(
            tenant_id=tenant_id(req), id=webhook_id, created_at=now, updated_at=now,
            secret_encrypted=crypto.encrypt(self.settings.require("secret_key"), secret.encode()),
            **values).execute()
        body = {**serialize(Webhook.get(Webhook.id == webhook_id)), "secret": secret}
        created(resp, body, f"/v1/webhooks/{webhook_id}")


class WebhookResource:
    """One webhook: read, update, delete."""

    tag = "webhooks"
    policy = {"GET": access.read("webhooks"), "PATCH": access.write("webhooks", role="admin"),
              "DELETE": access.write("webhooks", role="admin")}
    docs = {
        "GET": Operation("Get a webhook", response=SCHEMA),
        "PATCH": Operation("Update a webhook (re-enabling resets the failure count)",
                           body=FIELDS, partial=True, response=SCHEMA),
        "DELETE": Operation("Delete a webhook", status=204),
    }

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        """Return one webhook."""
        resp.media = serialize(get_or_404(Webhook.select(), Webhook.id, webhook_id, "webhook"))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        """Change URL, event types or enabled."""
        row = get_or_404(Webhook.select().for_update(), Webhook.id, webhook_id, "webhook")
        values = FIELDS.parse(read_body(req), partial=True)
        if "url" in values:
            values["url"] = _url(values["url"], self.settings)
        if values.get("enabled") is True and not row.enabled:
            values.update(disabled_reason=None, consecutive_failures=0, paused_until=None)
        if values:
            Webhook.update(updated_at=utcnow(), **values).where(Webhook.id == row.id).execute()
        resp.media = serialize(Webhook.get(Webhook.id == row.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        """Delete a webhook and its delivery log."""
        row = get_or_404(Webhook.select(), Webhook.id, webhook_id, "webhook")
        Webhook.delete().where(Webhook.id == row.id).execute()
        resp.status = 204


class WebhookRotateResource:
    """``POST .../rotate-secret``: replace the secret; the old one stops at once."""

    #: APPSEC: shown once; never stored for Idempotency-Key replays.
    replay_omits = ("secret",)
    tag = "webhooks"
    policy = {"POST": access.write("webhooks", role="admin")}
    docs = {"POST": Operation("Rotate the signing secret (shown once)", body=Fields(),
                              response=WITH_SECRET)}

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        """Generate, store encrypted, and return a new secret."""
        Fields().parse(read_body(req))
        row = get_or_404(Webhook.select().for_update(), Webhook.id, webhook_id, "webhook")
        secret = new_secret()
        Webhook.update(
            secret_encrypted=crypto.encrypt(self.settings.require("secret_key"), secret.encode()),
            updated_at=utcnow()).where(Webhook.id == row.id).execute()
        resp.media = {**serialize(Webhook.get(Webhook.id == row.id)), "secret": secret}


class WebhookDeliveriesResource:
    """``GET .../deliveries``: the delivery log, oldest first."""

    tag = "webhooks"
    policy = {"GET": access.read("webhooks")}
    docs = {"GET": Operation("List a webhook's deliveries", response=page_of(DELIVERY),
                             paginated=True)}

    def __init__(self, ids: PublicIds) -> None:
        self.ids = ids

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        """List deliveries of one webhook."""
        row = get_or_404(Webhook.select(), Webhook.id, webhook_id, "webhook")
        query = WebhookDelivery.select().where(WebhookDelivery.webhook_id == row.id)
        resp.media = paginate(
            req, query, WebhookDelivery.created_at, WebhookDelivery.id,
            lambda delivery: serialize_delivery(delivery, self.ids),
            cursor_value=public_cursor(self.ids, "webhook_delivery", principal(req).tenant_id))


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the webhook routes."""
    settings = services["settings"]
    return [
        ("/v1/webhooks", WebhooksResource(settings)),
        ("/v1/webhooks/{webhook_id}", WebhookResource(settings)),
        ("/v1/webhooks/{webhook_id}/rotate-secret", WebhookRotateResource(settings)),
        ("/v1/webhooks/{webhook_id}/deliveries", WebhookDeliveriesResource(public_ids(settings.secret_key))),
    ]
