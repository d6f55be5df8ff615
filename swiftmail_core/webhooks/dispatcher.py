"""Webhook deliveries: enqueue from events, claim, POST, log, retry, disable.

Deliveries are rows of ``webhook_deliveries`` (the delivery log a tenant
reads). Workers claim due rows with ``FOR UPDATE SKIP LOCKED`` and a lease;
an expired lease is claimable again. A failed attempt is retried with
exponential backoff (30 s doubling, capped at 2 h) until ``retry_window``
(a day) after the event; then it is abandoned and, if the webhook has not
succeeded since, the webhook is disabled and a ``webhook_disabled`` event is
recorded for the tenant.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
import uuid

import structlog

from swiftmail_core.crypto import decrypt
from swiftmail_core.db import system_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager
from swiftmail_core.webhooks.signing import SIGNATURE_HEADER, sign_payload
from swiftmail_core.webhooks.transport import PostResult, post
from swiftmail_core.webhooks.urls import UrlPolicy, check_webhook_url

log = structlog.get_logger("swiftmail.webhooks")
FIRST_RETRY = datetime.timedelta(seconds=30)
MAX_RETRY = datetime.timedelta(hours=2)
RETRY_WINDOW = datetime.timedelta(days=1)
LEASE = datetime.timedelta(minutes=2)


def next_delay(attempts: int, jitter: float = 0.1) -> datetime.timedelta:
    """Return the wait before attempt ``attempts + 1`` (exponential, capped)."""
    delay = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_RETRY)
    return delay * (1 + random.uniform(0, jitter))


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with what is needed to send it."""

    tenant_id: uuid.UUID
    delivery_id: int
    webhook_id: uuid.UUID
    url: str
    secret_encrypted: bytes
    payload: dict
    attempts: int
    created_at: datetime.datetime


class Dispatcher:
    """Deliver due webhook deliveries; one instance per worker process."""

    def __init__(
        self,
        secret_key: str,
        policy: UrlPolicy,
        plugins: PluginManager | None = None,
        *,
        timeout: float = 10.0,
        retry_window: datetime.timedelta = RETRY_WINDOW,
        resolve=None,
        tenant_id: uuid.UUID | None = None,
    ) -> None:
        self.secret_key = secret_key
        self.policy = policy
        self.plugins = plugins
        self.timeout = timeout
        self.retry_window = retry_window
        self.resolve = resolve
        self.tenant_id = tenant_id  # deliver one tenant's webhooks only (None: all)

    @property
    def _tenant(self) -> str | None:
        return str(self.tenant_id) if self.tenant_id else None

    def claim(self, limit: int = 50) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries of enabled webhooks."""
        with system_tx() as database:
            rows = database.execute_sql(
                "WITH due AS (SELECT d.tenant_id, d.id FROM webhook_deliveries d "
                "WHERE d.next_attempt_at <= now() AND (d.status = 'pending' OR "
                "(d.status = 'delivering' AND d.lease_expires_at < now())) "
                "AND (%s::uuid IS NULL OR d.tenant_id = %s::uuid) "
                "ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE webhook_deliveries d SET status = 'delivering', "
                "lease_expires_at = now() + %s, updated_at = now() FROM due, webhooks w "
                "WHERE d.tenant_id = due.tenant_id AND d.id = due.id "
                "AND w.tenant_id = d.tenant_id AND w.id = d.webhook_id "
                "RETURNING d.tenant_id, d.id, d.webhook_id, w.url, w.secret_encrypted, "
                "d.payload, d.attempts, d.created_at, w.enabled",
                (self._tenant, self._tenant, limit, LEASE),
            ).fetchall()
            disabled = [(str(r[0]), r[1]) for r in rows if not r[8]]
            for tenant, delivery in disabled:
                database.execute_sql(
                    "UPDATE webhook_deliveries SET status = 'abandoned', "
                    "response_excerpt = 'webhook disabled', updated_at = now() "
                    "WHERE tenant_id = %s AND id = %s", (tenant, delivery),
                )
        return [
            Claimed(uuid.UUID(str(r[0])), r[1], uuid.UUID(str(r[2])), r[3], bytes(r[4]),
                    r[5] if isinstance(r[5], dict) else json.loads(r[5]), r[6], r[7])
            for r in rows if r[8]
        ]

    def attempt(self, claimed: Claimed) -> PostResult:
        """Check the URL again, sign and POST one delivery."""
        try:
            checked = check_webhook_url(claimed.url, self.policy, self.resolve)
        except ValidationError as ex:
            return PostResult(0, f"refused: {ex}")
        body = json.dumps(claimed.payload, separators=(",", ":"), sort_keys=True).encode()
        secret = decrypt(self.secret_key, claimed.secret_encrypted)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SwiftMail-Webhooks/1",
            SIGNATURE_HEADER: sign_payload(secret, body),
            "SwiftMail-Delivery": str(claimed.delivery_id),
            "SwiftMail-Event": str(claimed.payload.get("type", "")),
        }
        return post(checked, body, headers, timeout=self.timeout)

    def finish(self, claimed: Claimed, result: PostResult) -> None:
        """Log the attempt; schedule a retry, abandon, or disable the webhook."""
        attempts = claimed.attempts + 1
        tenant, delivery = str(claimed.tenant_id), claimed.delivery_id
        disabled = False
        with system_tx() as database:
            if result.ok:
                database.execute_sql(
                    "UPDATE webhook_deliveries SET status = 'succeeded', attempts = %s, "
                    "response_status = %s, response_excerpt = %s, lease_expires_at = NULL, "
                    "updated_at = now() WHERE tenant_id = %s AND id = %s",
                    (attempts, result.status, result.excerpt, tenant, delivery),
                )
                database.execute_sql(
                    "UPDATE webhooks SET consecutive_failures = 0, updated_at = now() "
                    "WHERE tenant_id = %s AND id = %s", (tenant, str(claimed.webhook_id)),
                )
                return
            now = datetime.datetime.now(datetime.UTC)
            retry_at = now + next_delay(attempts)
            give_up = retry_at - claimed.created_at > self.retry_window
            database.execute_sql(
                "UPDATE webhook_deliveries SET status = %s, attempts = %s, "
                "next_attempt_at = %s, response_status = %s, response_excerpt = %s, "
                "lease_expires_at = NULL, updated_at = now() WHERE tenant_id = %s AND id = %s",
                ("abandoned" if give_up else "pending", attempts, retry_at,
                 result.status or None, result.excerpt, tenant, delivery),
            )
            failures = database.execute_sql(
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, "
                "updated_at = now() WHERE tenant_id = %s AND id = %s "
                "RETURNING consecutive_failures, enabled",
                (tenant, str(claimed.webhook_id)),
            ).fetchone()
            if give_up and failures and failures[1]:
                reason = (f"deliveries failed for {self.retry_window} "
                          f"({failures[0]} failures in a row); last: {result.excerpt[:200]}")
                database.execute_sql(
                    "UPDATE webhooks SET enabled = false, disabled_reason = %s, "
                    "updated_at = now() WHERE tenant_id = %s AND id = %s",
                    (reason, tenant, str(claimed.webhook_id)),
                )
                disabled = True
        if disabled:
            record_events([EventRecord(
                claimed.tenant_id, "webhook_disabled",
                source_key=f"webhook_disabled:{claimed.webhook_id}:{delivery}",
                detail={"webhook_id": str(claimed.webhook_id), "url": claimed.url},
            )], self.plugins)
            log.warning("webhook_disabled", tenant_id=tenant, webhook_id=str(claimed.webhook_id))

    def deliver_due(self, limit: int = 50) -> int:
        """Claim and attempt due deliveries; return how many were attempted."""
        claimed = self.claim(limit)
        for item in claimed:
            self.finish(item, self.attempt(item))
        return len(claimed)
