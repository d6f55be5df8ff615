"""Find mail that is due, not in flight and not queued: a lost wake-up.

The engine keeps every pending message in memory and wakes each (queue id,
domain) through its ready queue or its timers. Should a wake-up ever be
lost (a bug), the message would sit in the spool for ever. The engine runs
``overdue`` every few seconds; whatever it returns is logged, counted in
``swiftmail_relay_overdue_total`` and scheduled again, so such a bug
degrades to a delay, never to silent loss.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from swiftmail_relay.spool import Envelope


def overdue(
    envelopes: Mapping[str, Envelope],
    inflight: Collection[tuple[str, str]],
    queued: Collection[tuple[str, str]],
    now: float,
    bound: float,
) -> list[tuple[str, str, float]]:
    """Return (queue id, domain, seconds overdue) for wake-ups lost for over ``bound`` seconds.

    A (queue id, domain) counts when its earliest pending recipient was due
    more than ``bound`` seconds ago and it is neither being delivered nor
    waiting in the ready queue (a backlog is not a loss).
    """
    found = []
    for queue_id, envelope in envelopes.items():
        due: dict[str, float] = {}
        for recipient in envelope.pending:
            when = due.get(recipient.domain)
            if when is None or recipient.next_attempt_at < when:
                due[recipient.domain] = recipient.next_attempt_at
        for domain, when in due.items():
            key = (queue_id, domain)
            if now - when > bound and key not in inflight and key not in queued:
                found.append((queue_id, domain, now - when))
    return found
