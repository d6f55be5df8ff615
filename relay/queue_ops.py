"""Operator actions on a spool: depth, detail, retry now, hold, release, purge.

These work on the spool directory, so they are safe while the relay runs:
hold and purge move or delete files (the relay's next scan forgets them),
release moves files back (the next scan picks them up), and retry drops a
control file the running relay applies (or that the next start applies).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swiftmail_relay.spool import Envelope, Spool


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which messages an action touches: by recipient domain and/or tenant."""

    domain: str | None = None
    tenant: str | None = None

    def matches(self, envelope: Envelope) -> bool:
        """True if the message has a pending recipient the selector covers."""
        if self.tenant and envelope.tenant_id != self.tenant:
            return False
        if self.domain:
            return any(r.domain == self.domain.lower() for r in envelope.pending)
        return True


def _envelopes(spool: Spool, directory: Path) -> list[Envelope]:
    found = []
    for queue_id in spool.scan(directory):
        try:
            found.append(spool.read_envelope(queue_id, directory))
        except (OSError, ValueError):
            continue
    return found


def depth(spool: Spool) -> dict[str, dict[str, int]]:
    """Return pending recipients per destination domain and per tenant, and held messages."""
    by_domain: collections.Counter[str] = collections.Counter()
    by_tenant: collections.Counter[str] = collections.Counter()
    messages = 0
    for envelope in _envelopes(spool, spool.queue):
        messages += 1
        for recipient in envelope.pending:
            by_domain[recipient.domain] += 1
            by_tenant[envelope.tenant_id or "-"] += 1
    held = sum(1 for _ in spool.scan(spool.hold))
    return {
        "totals": {"messages": messages, "recipients": sum(by_domain.values()), "held": held},
        "domains": dict(by_domain.most_common()),
        "tenants": dict(by_tenant.most_common()),
    }


WAITS_FILE = "waits.json"
WAITS_FRESH_SECONDS = 60.0


def write_waits(spool: Spool, waits: Mapping[str, tuple[str, float | None]],
                inflight: Sequence[str]) -> None:
    """Publish what the running relay's messages wait for (atomic replace).

    ``waits`` maps a queue id to (reason, until): ``rate``, ``warm-up``,
    ``suspended`` or ``slot``; ``inflight`` lists queue ids being sent.
    """
    payload = {"written_at": time.time(), "inflight": sorted(set(inflight)),
               "waits": {queue_id: list(wait) for queue_id, wait in waits.items()}}
    temporary = spool.tmp / f"{WAITS_FILE}.{secrets.token_hex(4)}"
    temporary.write_text(json.dumps(payload, separators=(",", ":")))
    os.rename(temporary, spool.root / WAITS_FILE)


def _read_waits(spool: Spool, now: float) -> dict[str, Any]:
    try:
        payload = json.loads((spool.root / WAITS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if now - float(payload.get("written_at", 0)) > WAITS_FRESH_SECONDS:
        return {}  # no relay running (or a stale file): derive from the spool alone
    return payload


def detail(spool: Spool, selector: Selector | None = None, *, limit: int = 100,
           now: float | None = None) -> list[dict[str, Any]]:
    """Return per-message rows, soonest next attempt first (at most ``limit``).

    Each row: queue id, tenant, destination domains, attempts, next attempt
    (epoch seconds), last reply and what the message waits for: ``sending``
    (in flight), ``slot`` (a free connection), ``rate``, ``warm-up``,
    ``suspended`` (adaptive backoff), ``retry`` (after a deferral) or
    ``delivery`` (due, queued for a worker).
    """
    now = time.time() if now is None else now
    relay = _read_waits(spool, now)
    waits = relay.get("waits", {})
    inflight = set(relay.get("inflight", ()))
    rows = []
    for envelope in _envelopes(spool, spool.queue):
        pending = envelope.pending
        if not pending or (selector is not None and not selector.matches(envelope)):
            continue
        reason, until = (waits.get(envelope.id) or [None, None])[:2]
        next_attempt = until if until is not None else min(r.next_attempt_at for r in pending)
        if reason is None:
            if envelope.id in inflight:
                reason = "sending"
            elif next_attempt > now:
                reason = "retry"
            else:
                reason = "delivery"
        replies = [r.last_reply for r in pending if r.last_reply]
        rows.append({
            "queue_id": envelope.id, "tenant": envelope.tenant_id,
            "destination": sorted({r.domain for r in pending}),
            "recipients": len(pending), "attempts": max(r.attempts for r in pending),
            "next_attempt": next_attempt, "last_reply": replies[-1] if replies else "",
            "waits_for": reason,
        })
    rows.sort(key=lambda row: (row["next_attempt"], row["queue_id"]))
    return rows[:limit]


def retry(spool: Spool, selector: Selector) -> None:
    """Ask the relay to try matching messages now (a control file)."""
    payload = {"action": "retry", "domain": selector.domain, "tenant": selector.tenant}
    path = spool.control / f"{secrets.token_hex(8)}.json"
    temporary = spool.tmp / path.name
    temporary.write_text(json.dumps(payload))
    os.rename(temporary, path)


def hold(spool: Spool, selector: Selector) -> int:
    """Move matching messages to hold/; return how many."""
    moved = 0
    for envelope in _envelopes(spool, spool.queue):
        if selector.matches(envelope):
            try:
                spool.move(envelope.id, spool.queue, spool.hold)
                moved += 1
            except FileNotFoundError:
                continue
    return moved


def release(spool: Spool, selector: Selector) -> int:
    """Move matching held messages back to queue/; return how many."""
    moved = 0
    for envelope in _envelopes(spool, spool.hold):
        if selector.matches(envelope):
            spool.move(envelope.id, spool.hold, spool.queue)
            moved += 1
    return moved


def purge(spool: Spool, selector: Selector, *, held: bool = False) -> int:
    """Delete matching messages (from hold/ with ``held``); return how many."""
    directory = spool.hold if held else spool.queue
    removed = 0
    for envelope in _envelopes(spool, directory):
        if selector.matches(envelope):
            spool.remove(envelope.id, directory)
            removed += 1
    return removed
