"""Reputation guards: pause a tenant whose bounce or complaint rate is too high.

Rates are rolling, over the tenant's last ``reputation_window`` sent
messages (ledger rows with a ``sent_at``, by ledger id, newest first, counted
since the tenant's last resume; ids follow creation order only roughly,
docs/architecture.md "Ledger ids", which a rolling sample can afford): hard
bounces (a ``bounced`` row with a ``hard`` bounce event) and complaints
(``complained`` rows, from FBL/ARF reports). Once the window holds at
least ``reputation_min_sample`` sends and a rate is above its threshold
(``max_bounce_rate``, ``max_complaint_rate``), an open ``sending_pauses``
row is written with the reason, a ``sending_paused`` event is stored, and
the outbox claims nothing for the tenant until ``swiftmail relay
resume-tenant`` closes the pause (``sending_resumed``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

import structlog

from swiftmail_core.db import system_tx
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager

log = structlog.get_logger("swiftmail.relay.reputation")

_RATES_SQL = """
WITH since AS (
    SELECT coalesce(max(resumed_at), '-infinity'::timestamptz) AS at
    FROM sending_pauses WHERE tenant_id = %(tenant)s
), recent AS (
    SELECT m.id, m.status FROM messages m, since
    WHERE m.tenant_id = %(tenant)s AND m.sent_at IS NOT NULL AND m.sent_at > since.at
    ORDER BY m.id DESC LIMIT %(window)s
)
SELECT count(*),
       count(*) FILTER (WHERE r.status = 'bounced' AND EXISTS (
           SELECT 1 FROM events e WHERE e.tenant_id = %(tenant)s AND e.message_id = r.id
           AND e.type = 'bounced' AND e.bounce_class = 'hard')),
       count(*) FILTER (WHERE r.status = 'complained')
FROM recent r
"""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The operator's limits (``[plugins.relay]``)."""

    window: int = 1000
    min_sample: int = 200
    max_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.001

    @classmethod
    def from_config(cls, config: Any) -> Thresholds:
        """Read the thresholds from a RelayConfig."""
        return cls(config.reputation_window, config.reputation_min_sample,
                   config.max_bounce_rate, config.max_complaint_rate)


@dataclasses.dataclass(frozen=True)
class Rates:
    """A tenant's rolling sample."""

    sends: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float:
        """Return hard bounces per send."""
        return self.hard_bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        """Return complaints per send."""
        return self.complaints / self.sends if self.sends else 0.0

    def breach(self, limits: Thresholds) -> str | None:
        """Return why sending must pause, or None."""
        if self.sends < limits.min_sample:
            return None
        if self.complaint_rate > limits.max_complaint_rate:
            return (f"complaint rate {self.complaint_rate:.2%} over the last {self.sends} sends "
                    f"is above {limits.max_complaint_rate:.2%}")
        if self.bounce_rate > limits.max_bounce_rate:
            return (f"hard bounce rate {self.bounce_rate:.2%} over the last {self.sends} sends "
                    f"is above {limits.max_bounce_rate:.2%}")
        return None


def rates(tenant_id: uuid.UUID, window: int) -> Rates:
    """Return the tenant's rolling rates since its last resume."""
    with system_tx() as database:
        sends, bounces, complaints = database.execute_sql(
            _RATES_SQL, {"tenant": str(tenant_id), "window": window}).fetchone()
    return Rates(int(sends), int(bounces), int(complaints))


def open_pause(tenant_id: uuid.UUID) -> dict[str, Any] | None:
    """Return the tenant's open pause (reason, detail, paused_at), or None."""
    with system_tx() as database:
        row = database.execute_sql(
            "SELECT id, reason, detail, paused_at FROM sending_pauses "
            "WHERE tenant_id = %s AND resumed_at IS NULL", (str(tenant_id),)).fetchone()
    if row is None:
        return None
    return {"id": int(row[0]), "reason": row[1], "detail": row[2],
            "paused_at": row[3].isoformat()}


def check(tenant_ids: Iterable[uuid.UUID], limits: Thresholds,
          plugins: PluginManager | None = None) -> list[uuid.UUID]:
    """Pause every tenant whose rates breach ``limits``; return those paused now."""
    paused = []
    for tenant_id in sorted(set(tenant_ids), key=str):
        sample = rates(tenant_id, limits.window)
        reason = sample.breach(limits)
        if reason is None:
            continue
        detail = {"sends": sample.sends, "hard_bounces": sample.hard_bounces,
                  "complaints": sample.complaints, "bounce_rate": round(sample.bounce_rate, 5),
                  "complaint_rate": round(sample.complaint_rate, 6)}
        with system_tx() as database:
            row = database.execute_sql(
                "INSERT INTO sending_pauses (tenant_id, reason, detail) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id) WHERE resumed_at IS NULL DO NOTHING RETURNING id",
                (str(tenant_id), reason, _json(detail))).fetchone()
        if row is None:
            continue  # already paused
        record_events([EventRecord(tenant_id, "sending_paused",
                                   source_key=f"sending_paused:{row[0]}",
                                   detail={"reason": reason, **detail})], plugins)
        log.warning("tenant_sending_paused", tenant_id=str(tenant_id), reason=reason, **detail)
        paused.append(tenant_id)
    return paused


def resume(tenant_id: uuid.UUID, operator: str,
           plugins: PluginManager | None = None) -> dict[str, Any] | None:
    """Close the tenant's open pause; return it, or None when it was not paused."""
    with system_tx() as database:
        row = database.execute_sql(
            "UPDATE sending_pauses SET resumed_at = now(), resumed_by = %s "
            "WHERE tenant_id = %s AND resumed_at IS NULL RETURNING id, reason",
            (operator, str(tenant_id))).fetchone()
    if row is None:
        return None
    record_events([EventRecord(tenant_id, "sending_resumed",
                               source_key=f"sending_resumed:{row[0]}",
                               detail={"reason": row[1], "resumed_by": operator})], plugins)
    log.info("tenant_sending_resumed", tenant_id=str(tenant_id), resumed_by=operator)
    return {"id": int(row[0]), "reason": row[1]}


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
