"""Which receivers ledger rows wait to be resent to (``messages.resend_to``).

A row whose hand-off answer was lost remembers the receiver it may be at
and is resent there only (``sending.state``, ``outbox.record_results``).
``doctor`` compares these receivers with the ones a transport still knows.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg2

from swiftmail_core.db.targets import DatabaseTargets

#: Rows still waiting for their receiver (deferred) or given up on it (unknown).
#: NOTE: written as OR so the planner may combine the due and unknown partial
#: indexes instead of reading the whole ledger.
_PINNED_SQL = (
    "/* cross-tenant */ SELECT resend_to, status, count(*) FROM messages "
    "WHERE resend_to IS NOT NULL AND (status = 'deferred' OR status = 'unknown') "
    "GROUP BY 1, 2")


def pinned_receivers(targets: DatabaseTargets) -> dict[str, dict[str, int]]:
    """Return {receiver: {status: rows}} of rows pinned to a receiver, as the system role."""
    connection = psycopg2.connect(targets.dsn("system"))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(_PINNED_SQL)
            found = cursor.fetchall()
    finally:
        connection.close()
    pinned: dict[str, dict[str, int]] = defaultdict(dict)
    for receiver, status, rows in found:
        pinned[str(receiver)][str(status)] = int(rows)
    return dict(pinned)
