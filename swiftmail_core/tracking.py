"""Tracking events as plugins see them."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Mapping
from typing import Any

EVENT_TYPES = (
    "accepted", "delivered", "deferred", "bounced", "expired", "opened", "clicked",
    "complained", "unsubscribed", "subscribed", "confirmed", "webhook_disabled",
    "campaign_paused", "sending_paused", "sending_resumed",
)


@dataclasses.dataclass(frozen=True)
class TrackingEvent:
    """One delivery or engagement event, after it is stored."""

    tenant_id: uuid.UUID
    type: str
    occurred_at: datetime.datetime
    message_id: int | None = None
    campaign_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    email: str | None = None
    link_id: int | None = None
    bounce_class: str | None = None
    is_machine: bool = False
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
