"""Delivery events reported by a provider's webhook, into the one state writer.

Transport plugins verify the provider's signature, map its events to
``ProviderEvent`` (with the tenant and ledger id they sent as custom
arguments) and call ``apply_provider_events``, which reports them to
``swiftmail_core.sending.state`` (system role, one transaction).
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from swiftmail_core.models import utcnow
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending.state import Report, apply_reports


@dataclasses.dataclass(frozen=True)
class ProviderEvent:
    """One provider event, mapped to SwiftMail's vocabulary."""

    tenant_id: uuid.UUID
    ledger_id: int
    type: str
    email: str
    source_key: str
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    bounce_class: str | None = None
    is_machine: bool = False
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def apply_provider_events(
    events: Sequence[ProviderEvent], plugins: PluginManager | None = None
) -> int:
    """Report provider events to the one message state writer; return events stored.

    APPSEC: an event counts only for a ledger row of the tenant it names, to
    the address that row was sent to; anything else is dropped.
    """
    applied = apply_reports([
        Report(tenant_id=e.tenant_id, type=e.type, source_key=e.source_key,
               ledger_id=e.ledger_id, email=e.email, occurred_at=e.occurred_at,
               bounce_class=e.bounce_class, is_machine=e.is_machine, source="provider",
               require_email_match=True, detail=dict(e.detail))
        for e in events], plugins)
    return len(applied.events)
