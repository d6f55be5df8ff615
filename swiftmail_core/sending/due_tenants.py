"""Which tenants have due mail: the outbox's queue of due-tenant hints.

The outbox is claimed tenant by tenant (``outbox.claim_batch``) through the
generic due-tenant hints (``swiftmail_core.due_tenants``, queue ``outbox``);
the due set is ``messages`` rows ``queued`` or ``deferred`` whose
``next_attempt_at`` has come. Writers that queue mail call ``mark_due`` in
their own transaction.
"""

from __future__ import annotations

from swiftmail_core.due_tenants import DueQueue

#: Ledger statuses a claim takes (the due set).
DUE_STATUSES = ("queued", "deferred")

OUTBOX = DueQueue(
    "outbox",
    due_sql="SELECT m.tenant_id, min(m.next_attempt_at) FROM messages m "
            "WHERE m.status IN ('queued', 'deferred') AND m.next_attempt_at <= now() "
            "GROUP BY m.tenant_id",
    next_due_sql="SELECT min(next_attempt_at) FROM messages WHERE tenant_id = %(tenant)s "
                 "AND status IN ('queued', 'deferred')",
)
mark_due = OUTBOX.mark_due
due_now = OUTBOX.due_now
settle_within = OUTBOX.settle_within
refresh = OUTBOX.refresh
