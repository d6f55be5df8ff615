"""Drain the hit stream into events, in batches, exactly once.

Each batch: read entries (first this consumer's unacknowledged ones, then
entries another consumer abandoned, then new ones), look up their ledger rows
in one query, classify, ``record_events`` (one transaction; ``source_key`` is
the stream entry id and ``occurred_at`` the hit's own time, so a batch
retried after a crash stores nothing twice), and only then ``XACK``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import uuid
from typing import Any

from swiftmail_core.db import system_tx
from swiftmail_core.db.by_key import rows_by_key
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager
from swiftmail_core.tracking_ingest.hits import Hit, shared_uuid
from swiftmail_core.tracking_ingest.machine import DEFAULT_SCANNER_WINDOW, classify
from swiftmail_core.tracking_ingest.stream import HitStream

log = logging.getLogger(__name__)

#: Hits stored per transaction. A batch reads at most this many entries, and
#: fewer when fewer are waiting, so it grows only while the drainer is behind.
#: 2,000 cost 16 % less CPU an event than 500 (drainer and its PostgreSQL
#: backend; docs/benchmarks.md, Tracking, "session 15").
DEFAULT_BATCH_SIZE = 2000


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    """What an event needs from its message: campaign, contact, address, send time."""

    campaign_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    email: str
    sent_at: datetime.datetime | None


def load_ledger_rows(keys: set[tuple[uuid.UUID, int]]) -> dict[tuple[uuid.UUID, int], LedgerRow]:
    """Return the ledger rows of (tenant, message) pairs, one query per tenant.

    Each query names its tenant, so on Citus it reads one shard.
    """
    if not keys:
        return {}
    by_tenant: dict[str, list[int]] = {}
    for tenant, message in keys:
        by_tenant.setdefault(str(tenant), []).append(message)
    rows: list[Any] = []
    with system_tx() as database:
        for tenant_key, ids in sorted(by_tenant.items()):
            rows.extend(tenant_ledger_rows(database, tenant_key, ids))
    return {
        (shared_uuid(str(tenant)), message): LedgerRow(
            shared_uuid(str(campaign)) if campaign else None,
            uuid.UUID(str(contact)) if contact else None,
            email,
            sent_at,
        )
        for tenant, message, campaign, contact, email, sent_at in rows
    }


def tenant_ledger_rows(database: Any, tenant: str, ids: list[int]) -> list[Any]:
    """Return (tenant, id, campaign, contact, email, sent_at) of one tenant's messages.

    One key probe per message (``db/by_key.py``): a new tenant's first
    campaign's opens no longer read its whole ledger for every batch.
    """
    return database.execute_sql(
        "SELECT m.tenant_id, m.id, m.campaign_id, m.contact_id, m.email, m.sent_at "
        f"FROM {rows_by_key('messages', 'm', id_type='bigint')}",
        (sorted(set(ids)), tenant)).fetchall()


def hits_to_records(
    entries: list[tuple[str, Hit]],
    ledger: dict[tuple[uuid.UUID, int], LedgerRow],
    scanner_window: datetime.timedelta = DEFAULT_SCANNER_WINDOW,
) -> list[EventRecord]:
    """Turn parsed hits into event records keyed by their stream entry ids."""
    records = []
    for entry_id, hit in entries:
        row = ledger.get((hit.tenant_id, hit.message_id))
        verdict = classify(hit, row.sent_at if row else None, scanner_window)
        detail: dict[str, str] = {}
        if verdict.is_machine:
            detail["machine_reason"] = verdict.reason
        if hit.user_agent:
            detail["user_agent"] = hit.user_agent[:200]
        records.append(
            EventRecord(
                tenant_id=hit.tenant_id,
                type="opened" if hit.kind == "open" else "clicked",
                occurred_at=hit.occurred_at,
                message_id=hit.message_id,
                campaign_id=row.campaign_id if row else None,
                contact_id=row.contact_id if row else None,
                email=row.email if row else None,
                link_id=hit.link_id,
                is_machine=verdict.is_machine,
                source_key=f"hit:{entry_id}",
                detail=detail,
            )
        )
    return records


class Drainer:
    """A consumer of the hit stream that stores hits as events."""

    def __init__(
        self,
        stream: HitStream,
        consumer: str,
        plugins: PluginManager | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        block_ms: int = 1000,
        reclaim_idle_ms: int = 60_000,
        scanner_window: datetime.timedelta = DEFAULT_SCANNER_WINDOW,
    ) -> None:
        self.stream = stream
        self.consumer = consumer
        self.plugins = plugins
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.scanner_window = scanner_window
        self._recovered = False

    def _next_entries(self) -> list[tuple[str, dict]]:
        if not self._recovered:
            pending = self.stream.read_pending(self.consumer, self.batch_size)
            if pending:
                return pending
            self._recovered = True
        abandoned = self.stream.claim_abandoned(
            self.consumer, self.reclaim_idle_ms, self.batch_size
        )
        if abandoned:
            return abandoned
        return self.stream.read_new(self.consumer, self.batch_size, self.block_ms)

    def drain_once(self) -> int:
        """Process one batch; return the number of entries acknowledged."""
        raw = self._next_entries()
        if not raw:
            return 0
        parsed: list[tuple[str, Hit]] = []
        for entry_id, fields in raw:
            if not fields:
                continue  # deleted after a commit whose XACK was lost
            try:
                parsed.append((entry_id, Hit.from_fields(fields)))
            except (KeyError, ValueError) as ex:
                log.warning("dropping malformed hit %s: %s", entry_id, ex)
        ledger = load_ledger_rows({(hit.tenant_id, hit.message_id) for _, hit in parsed})
        records = hits_to_records(parsed, ledger, self.scanner_window)
        record_events(records, self.plugins)
        # NOTE: acknowledge only after the commit: a crash before this line
        # means the batch is read again and record_events skips what it stored.
        self.stream.acknowledge([entry_id for entry_id, _ in raw])
        return len(raw)

    def run(self, stop: threading.Event | None = None) -> None:
        """Drain until ``stop`` is set (forever when None)."""
        self.stream.ensure_group()
        while stop is None or not stop.is_set():
            try:
                self.drain_once()
            except Exception:  # keep draining; the batch stays pending
                log.exception("tracking drain batch failed; it will be retried")
                self._recovered = False  # re-read this consumer's pending entries
                if stop is not None:
                    stop.wait(1.0)
