"""Recording delivery and engagement events, exactly once, with their rollups.

``record_events`` is what the relay, the workers, provider webhooks and the
tracking ingester call. It runs as the system role (events arrive for many
tenants at once), inserts the events and increments the hourly rollups in
one transaction, and skips any event whose ``source_key`` was already
recorded (``event_sources``, whatever the event's time), so a retried batch or
a report delivered twice never double-counts. ``store_events`` does the same
inside a caller's transaction (the message state writer). Plugins see each
newly stored event through ``swiftmail_tracking_event`` after the commit.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.models import utcnow
from swiftmail_core.plugins import PluginManager
from swiftmail_core.tracking import EVENT_TYPES, TrackingEvent
from swiftmail_core.webhooks.queue import enqueue_within

BOUNCE_CLASSES = ("hard", "soft", "policy", "mailbox_full", "throttled", "expired")


@dataclasses.dataclass(frozen=True)
class EventRecord:
    """An event to store; ``source_key`` makes its recording idempotent."""

    tenant_id: uuid.UUID
    type: str
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    message_id: int | None = None
    campaign_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    email: str | None = None
    link_id: int | None = None
    bounce_class: str | None = None
    is_machine: bool = False
    source_key: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # NOTE: the ids as text, formatted once: store_events writes them to several
    # tables and keys, and UUID.__str__ is Python code (benchmarks.md, Tracking, "session 17").
    tenant_text: str = dataclasses.field(init=False, repr=False, compare=False)
    campaign_text: str | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValidationError.for_field("type", f"unknown event type {self.type!r}")
        if self.bounce_class is not None and self.bounce_class not in BOUNCE_CLASSES:
            raise ValidationError.for_field("bounce_class", f"unknown class {self.bounce_class!r}")
        object.__setattr__(self, "tenant_text", str(self.tenant_id))
        object.__setattr__(self, "campaign_text",
                           str(self.campaign_id) if self.campaign_id else None)

    @property
    def recipient_domain(self) -> str | None:
        """Return the recipient's domain, the dimension of per-provider stats."""
        if self.email and "@" in self.email:
            return self.email.rsplit("@", 1)[1].lower()
        return None


def rollup_keys(record: EventRecord) -> list[tuple[str, str]]:
    """Return the (metric, dimension) counters one event increments."""
    metric = record.type
    if record.type == "bounced" and record.bounce_class:
        metric = f"bounced.{record.bounce_class}"
    if record.type in ("opened", "clicked"):
        metric = f"{record.type}.{'machine' if record.is_machine else 'human'}"
    keys = [(metric, "")]
    if record.type in ("delivered", "deferred", "bounced", "expired") and record.recipient_domain:
        keys.append((metric, f"domain:{record.recipient_domain}"))
    if record.type == "clicked" and record.link_id is not None:
        keys.append((metric, f"link:{record.link_id}"))
    return keys


def _hour(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def record_events(
    records: Sequence[EventRecord], plugins: PluginManager | None = None
) -> list[EventRecord]:
    """Store events and their rollups once; return the records newly stored."""
    if not records:
        return []
    with system_tx() as database:
        stored = store_events(database, records)
    notify_plugins(plugins, stored)
    return stored


def notify_plugins(plugins: PluginManager | None, stored: Sequence[EventRecord]) -> None:
    """Tell plugins about newly stored events (after their transaction committed)."""
    if plugins is not None:
        for record in stored:
            plugins.tracking_event(to_tracking_event(record))


def store_events(database: Any, records: Sequence[EventRecord]) -> list[EventRecord]:
    """Insert events, rollups and webhook deliveries inside the caller's system transaction.

    An event whose ``source_key`` this tenant has already seen is skipped,
    whatever its ``occurred_at`` (``event_sources`` remembers every key), so the
    same DSN, provider webhook or relay outcome delivered twice counts once.
    """
    if not records:
        return []
    cursor = database.cursor()
    records = _first_time_sources(cursor, records)
    if not records:
        return []
    rows = [
        (
            r.tenant_text, r.occurred_at, r.type, r.message_id, r.campaign_text,
            str(r.contact_id) if r.contact_id else None,
            r.link_id, r.bounce_class, r.is_machine, r.recipient_domain, r.source_key,
            json.dumps({**r.detail, **({"email": r.email} if r.email else {})}),
        )
        for r in records
    ]
    # NOTE: plain multi-row VALUES inserts (rows go in, and take ids, in list order), not
    # INSERT ... SELECT FROM VALUES: Citus runs that through the coordinator, as a COPY
    # into the shard and a two-phase commit, several round trips per state write.
    inserted = execute_values(
        cursor,
        "INSERT INTO events (tenant_id, occurred_at, type, message_id, campaign_id, "
        "contact_id, link_id, bounce_class, is_machine, recipient_domain, source_key, detail) "
        "VALUES %s "
        "ON CONFLICT (tenant_id, occurred_at, source_key) DO NOTHING RETURNING source_key, id",
        rows,
        template="(%s::uuid, %s::timestamptz, %s, %s::bigint, %s::uuid, %s::uuid, %s::bigint, "
                 "%s, %s::boolean, %s, %s, %s::jsonb)",
        fetch=True,
    )
    stored = _match_inserted(records, inserted)
    counts: Counter[tuple[str, str, datetime.datetime, str, str]] = Counter()
    for record in stored:
        campaign = record.campaign_text
        if campaign is None:
            continue
        for metric, dimension in rollup_keys(record):
            counts[(record.tenant_text, campaign,
                    _hour(record.occurred_at), metric, dimension)] += 1
    for key in _first_engagement_keys(cursor, stored):
        counts[key] += 1
    enqueue_within(database, stored)
    if counts:
        execute_values(
            cursor,
            "INSERT INTO campaign_rollups (tenant_id, campaign_id, bucket, metric, dimension, value) "
            "VALUES %s ON CONFLICT (tenant_id, campaign_id, bucket, metric, dimension) "
            "DO UPDATE SET value = campaign_rollups.value + EXCLUDED.value",
            [(*key, value) for key, value in sorted(counts.items())],
        )
    return stored


def _first_time_sources(cursor: Any, records: Sequence[EventRecord]) -> list[EventRecord]:
    """Keep records without a source key and those whose key is new for their tenant."""
    keyed = {(r.tenant_text, r.source_key) for r in records if r.source_key is not None}
    if not keyed:
        return list(records)
    fresh = execute_values(
        cursor,
        # Sorted: concurrent writers lock keys in one order (VALUES rows go in list order).
        "INSERT INTO event_sources (tenant_id, source_key) VALUES %s "
        "ON CONFLICT DO NOTHING RETURNING tenant_id::text, source_key",
        sorted(keyed), template="(%s::uuid, %s)", fetch=True)
    new = {(tenant, key) for tenant, key in fresh}
    kept = []
    for record in records:
        if record.source_key is None:
            kept.append(record)
            continue
        identity = (record.tenant_text, record.source_key)
        if identity in new:
            new.discard(identity)  # a key repeated within one batch counts once too
            kept.append(record)
    return kept


def _first_engagement_keys(
    cursor: Any, stored: Sequence[EventRecord]
) -> list[tuple[str, str, datetime.datetime, str, str]]:
    """Record first opens and clicks; return the unique rollup keys they add.

    A message's first human (or machine) open adds one to
    ``opened.unique.human`` (or ``.machine``); its first click adds one to
    ``clicked.unique.*`` and its first click of each link to the same metric
    with dimension ``link:<id>``. ``engagement_firsts`` remembers what was
    seen, in the same transaction as the events, so retries stay exact.
    """
    wanted: dict[tuple[str, int, str, int], tuple[str, EventRecord]] = {}
    for record in stored:
        if record.type not in ("opened", "clicked") or record.message_id is None:
            continue
        campaign = record.campaign_text
        if campaign is None:
            continue
        metric = f"{record.type}.{'machine' if record.is_machine else 'human'}"
        links = [0] if record.link_id is None else [0, record.link_id]
        for link in links:
            wanted.setdefault((record.tenant_text, record.message_id, metric, link),
                              (campaign, record))
    if not wanted:
        return []
    firsts = execute_values(
        cursor,
        "INSERT INTO engagement_firsts (tenant_id, message_id, metric, link_id, campaign_id, "
        "first_at) VALUES %s "
        "ON CONFLICT DO NOTHING RETURNING tenant_id::text, message_id, metric, link_id",
        [(*key, campaign, record.occurred_at) for key, (campaign, record) in wanted.items()],
        template="(%s::uuid, %s::bigint, %s, %s::bigint, %s::uuid, %s::timestamptz)",
        fetch=True,
    )
    keys = []
    for tenant, message_id, metric, link in firsts:
        campaign, record = wanted[(tenant, message_id, metric, link)]
        kind, audience = metric.split(".")
        dimension = f"link:{link}" if link else ""
        keys.append((tenant, campaign, _hour(record.occurred_at),
                     f"{kind}.unique.{audience}", dimension))
    return keys


def _match_inserted(
    records: Sequence[EventRecord], inserted: Iterable[tuple[str | None, int]]
) -> list[EventRecord]:
    inserted = list(inserted)
    keyed = {key for key, _ in inserted if key is not None}
    unkeyed = sum(1 for key, _ in inserted if key is None)
    stored = []
    for record in records:
        if record.source_key is None:
            if unkeyed:
                stored.append(record)
                unkeyed -= 1
        elif record.source_key in keyed:
            stored.append(record)
            keyed.discard(record.source_key)
    return stored


def to_tracking_event(record: EventRecord) -> TrackingEvent:
    """Return the plugin-facing view of a stored event."""
    return TrackingEvent(
        tenant_id=record.tenant_id,
        type=record.type,
        occurred_at=record.occurred_at,
        message_id=record.message_id,
        campaign_id=record.campaign_id,
        contact_id=record.contact_id,
        email=record.email,
        link_id=record.link_id,
        bounce_class=record.bounce_class,
        is_machine=record.is_machine,
        detail=dict(record.detail),
    )
