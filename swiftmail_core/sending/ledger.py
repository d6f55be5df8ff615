"""The per-recipient ledger a tenant can query: status, attempts, events."""

from __future__ import annotations

import uuid
from typing import Any

from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.models import Event, Message

LEDGER_FIELDS = (
    "id", "campaign_id", "contact_id", "email", "kind", "status", "attempts",
    "next_attempt_at", "message_id", "transport", "provider_message_id", "last_error",
    "variant", "created_at", "sent_at", "updated_at",
)


def _row(message: Message) -> dict[str, Any]:
    return {field: getattr(message, field) for field in LEDGER_FIELDS}


def list_messages(
    tenant_id: uuid.UUID | str,
    campaign_id: uuid.UUID | str | None = None,
    *,
    status: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Return ledger rows in id order, after ``after_id`` (cursor pagination)."""
    if not 1 <= limit <= 1000:
        raise ValidationError.for_field("limit", "must be between 1 and 1000")
    with tenant_tx(tenant_id):
        query = Message.select().order_by(Message.id).limit(limit)
        if campaign_id is not None:
            query = query.where(Message.campaign_id == campaign_id)
        if status is not None:
            query = query.where(Message.status == status)
        if after_id is not None:
            query = query.where(Message.id > after_id)
        return [_row(message) for message in query]


def get_message(tenant_id: uuid.UUID | str, ledger_id: int) -> dict[str, Any]:
    """Return one ledger row with its events, oldest first."""
    with tenant_tx(tenant_id):
        message = Message.select().where(Message.id == ledger_id).first()
        if message is None:
            raise NotFoundError(f"no message {ledger_id}")
        row = _row(message)
        row["events"] = [
            {"type": event.type, "occurred_at": event.occurred_at,
             "bounce_class": event.bounce_class, "detail": event.detail}
            for event in Event.select().where(Event.message_id == ledger_id)
            .order_by(Event.occurred_at)
        ]
        return row
