"""Operator actions on a spool: depth, retry now, hold, release, purge.

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
from pathlib import Path

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
