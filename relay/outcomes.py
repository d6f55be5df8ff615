"""Delivery outcomes back to the platform, through core's one state writer.

``record_outcomes`` turns the relay's outcomes (and the bounce listener's
DSN/ARF findings) into ``swiftmail_core.sending.state`` reports: the ledger
row moves along the transition table (a relay ``deferred`` never changes it,
so the sending pipeline never claims it again), the event is stored once by
its ``source_key``, and hard bounces and complaints are suppressed, all in
one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from swiftmail_relay.config import RelayConfig

from swiftmail_core.models import utcnow
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending.state import Report, apply_reports


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one recipient of one message."""

    tenant_id: uuid.UUID
    type: str  # delivered, deferred, bounced, expired, complained
    email: str
    source_key: str
    ledger_id: int | None = None
    bounce_class: str | None = None
    reply: str = ""
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def record_outcomes(outcomes: Sequence[Outcome], plugins: PluginManager | None = None) -> None:
    """Report outcomes to the one message state writer (idempotent by source key)."""
    applied = apply_reports([
        Report(tenant_id=o.tenant_id, type=o.type, source_key=o.source_key,
               ledger_id=o.ledger_id, email=o.email, occurred_at=o.occurred_at,
               bounce_class=o.bounce_class, reason=o.reply, source="relay",
               detail={"reply": o.reply, **o.detail})
        for o in outcomes], plugins)
    # Reputation guards: re-check tenants that just got a hard bounce or a complaint.
    flagged = {e.tenant_id for e in applied.events
               if e.type == "complained" or (e.type == "bounced" and e.bounce_class == "hard")}
    if flagged and plugins is not None:
        from swiftmail_relay import reputation

        reputation.check(flagged, reputation.Thresholds.from_config(
            RelayConfig.from_settings(plugins.settings)), plugins)
