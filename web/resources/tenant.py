"""``/v1/tenant``: the caller's own tenant, its settings and quotas.

Quotas and status are read-only here (operators change them with the CLI);
the app role can update only name, language and settings.
"""

from __future__ import annotations

from typing import Any

import falcon
from peewee import fn
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj
from swiftmail_web.public.render import OVERRIDE_KEY, validate_overrides
from swiftmail_web.resources.common import INTEGER, OBJECT, STRING, TIMESTAMP, UUID, tenant_id

from swiftmail_core.db import app_db
from swiftmail_core.errors import ValidationError
from swiftmail_core.models import Message, Tenant, utcnow
from swiftmail_core.sending.send_time import is_zone

FIELDS = Fields(
    name=Field("string", min_length=1, max_length=200),
    language=Field("string", min_length=2, max_length=16),
    settings=Field("object", description="Free-form tenant settings (merged; null removes). "
                   "timezone: the IANA zone of contacts without one (docs/send-time.md)."),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "tenant"}, "id": UUID, "slug": STRING,
    "name": STRING, "status": STRING, "language": STRING, "settings": OBJECT,
    "quotas": obj({"daily_quota": INTEGER, "send_rate_per_second": INTEGER,
                   "sent_today": INTEGER, "remaining_today": INTEGER}),
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})


def _sent_today() -> int:
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    count = (Message.select(fn.COUNT(Message.id))
             .where(Message.created_at >= midnight,
                    Message.kind.in_(("campaign", "transactional")),
                    Message.status != "cancelled").scalar())
    return int(count or 0)


def serialize(row: Tenant) -> dict[str, Any]:
    """Return the API shape of the tenant, quotas included."""
    sent = _sent_today()
    return {
        "object": "tenant", "id": row.id, "slug": row.slug, "name": row.name,
        "status": row.status, "language": row.language, "settings": row.settings,
        "quotas": {"daily_quota": row.daily_quota,
                   "send_rate_per_second": row.send_rate_per_second,
                   "sent_today": sent, "remaining_today": max(row.daily_quota - sent, 0)},
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


def _check_timezone(name: Any) -> None:
    """Refuse a ``timezone`` setting PostgreSQL does not know (null removes it)."""
    if name is not None and not is_zone(app_db, name):
        raise ValidationError.for_field(
            "settings.timezone", f"{name!r} is not a known IANA time zone, e.g. Europe/Oslo")


class TenantResource:
    """The caller's tenant."""

    tag = "tenant"
    policy = {"GET": access.read("tenant"), "PATCH": access.write("tenant", role="admin")}
    docs = {
        "GET": Operation("Get your tenant's settings and quotas", response=SCHEMA),
        "PATCH": Operation("Update name, language or settings (quotas are read-only)",
                           body=FIELDS, partial=True, response=SCHEMA),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the tenant (only its own row is visible)."""
        resp.media = serialize(Tenant.get(Tenant.id == tenant_id(req)))

    def on_patch(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Change name, language or settings."""
        values = FIELDS.parse(read_body(req), partial=True)
        row = Tenant.get(Tenant.id == tenant_id(req))
        if "settings" in values:
            validate_overrides(values["settings"].get(OVERRIDE_KEY))
            _check_timezone(values["settings"].get("timezone"))
            merged = {**row.settings, **values["settings"]}
            values["settings"] = {k: v for k, v in merged.items() if v is not None}
        if values:
            Tenant.update(updated_at=utcnow(), **values).where(Tenant.id == row.id).execute()
        resp.media = serialize(Tenant.get(Tenant.id == row.id))


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the tenant route."""
    return [("/v1/tenant", TenantResource())]
