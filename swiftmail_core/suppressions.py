"""Suppressing addresses: the machinery side (bounces, complaints, unsubscribes).

Tenants manage their suppression list through the API in their own
``tenant_tx``; the relay, workers and webhooks call ``suppress`` here, as the
system role, when an address proves undeliverable or complains.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.journeys.enrollment import exit_addresses

CONTACT_STATUS_FOR_REASON = {"hard_bounce": "bounced", "complaint": "complained",
                             "unsubscribe": "unsubscribed"}


@dataclasses.dataclass(frozen=True)
class SuppressionEntry:
    """An address a tenant must no longer mail, and why."""

    tenant_id: uuid.UUID
    email: str
    reason: str  # hard_bounce, complaint, unsubscribe, manual, import, blocklist
    source: str = ""
    detail: str = ""


def suppress(entries: Sequence[SuppressionEntry]) -> int:
    """Add suppressions (existing ones are kept) and mark contacts; return rows added."""
    if not entries:
        return 0
    with system_tx() as database:
        return suppress_within(database, entries)


def suppress_within(database: Any, entries: Sequence[SuppressionEntry]) -> int:
    """Do what ``suppress`` does inside the caller's system transaction."""
    if not entries:
        return 0
    cursor = database.cursor()
    added = execute_values(
        cursor,
        "INSERT INTO suppressions (tenant_id, email_lower, reason, source, detail) "
        "SELECT v.tenant_id::uuid, lower(v.email), v.reason, v.source, v.detail "
        "FROM (VALUES %s) AS v (tenant_id, email, reason, source, detail) "
        "ON CONFLICT (tenant_id, email_lower) DO NOTHING RETURNING 1",
        [(str(e.tenant_id), e.email, e.reason, e.source, e.detail[:1000]) for e in entries],
        fetch=True,
    )
    statuses = [
        (str(e.tenant_id), e.email.lower(), CONTACT_STATUS_FOR_REASON[e.reason])
        for e in entries
        if e.reason in CONTACT_STATUS_FOR_REASON
    ]
    if statuses:
        execute_values(
            cursor,
            "UPDATE contacts SET status = v.status, updated_at = now() "
            "FROM (VALUES %s) AS v (tenant_id, email_lower, status) "
            "WHERE contacts.tenant_id = v.tenant_id::uuid "
            "AND contacts.email_lower = v.email_lower AND contacts.status = 'active'",
            statuses,
        )
    # A suppressed address leaves every journey at once (its queued mail is
    # suppressed at claim time anyway).
    exit_addresses(database, [(e.tenant_id, e.email) for e in entries], "suppressed")
    return len(added)
