"""Webhook deliveries: claim, POST concurrently, log, retry, pause, disable.

Deliveries are rows of ``webhook_deliveries`` (the delivery log a tenant
reads). A dispatcher claims due rows exactly once (``leases.claim_due``: a
lease and a lease token, at most ``endpoint_concurrency`` in flight per
webhook) and POSTs them on a pool of ``concurrency`` threads, claiming more
as threads free up, so a slow receiver holds at most its own slots. Only
the holder of a delivery's lease token records its result.

A failed attempt is retried with exponential backoff (30 s doubling, capped
at 2 h) until ``retry_window`` (a day) after the event; then it is abandoned
and, if the webhook has not succeeded since, the webhook is disabled and a
``webhook_disabled`` event is recorded for the tenant. Every failure also
pauses the webhook (``paused_until``, the same backoff on its failures in a
row), so a failing or timing-out receiver is not tried for its other
deliveries meanwhile; a success ends the pause.
"""

from __future__ import annotations

import datetime
import json
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import structlog

from swiftmail_core.crypto import decrypt
from swiftmail_core.db import system_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager
from swiftmail_core.public_ids import public_ids
from swiftmail_core.settings import Settings
from swiftmail_core.webhooks.leases import Claimed, claim_due, release, slot_freed
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




class Dispatcher:
    """Deliver due webhook deliveries concurrently; one instance per deliverer."""

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
        concurrency: int = 8,
        endpoint_concurrency: int = 2,
        lease: datetime.timedelta | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.secret_key = secret_key
        self.policy = policy
        self.plugins = plugins
        self.timeout = timeout
        self.retry_window = retry_window
        self.resolve = resolve
        self.tenant_id = tenant_id  # deliver one tenant's webhooks only (None: all)
        self.concurrency = max(1, concurrency)
        self.endpoint_concurrency = max(1, endpoint_concurrency)
        # NOTE: the lease outlasts any attempt (connect retries, answer), so a
        # claim never expires under a POST still in flight.
        self.lease = lease or max(LEASE, datetime.timedelta(seconds=3 * timeout + 30))
        self.poll_seconds = poll_seconds
        self._paused: dict[tuple[uuid.UUID, uuid.UUID], datetime.datetime] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, plugins: PluginManager | None = None,
                      **options) -> Dispatcher:
        """Build the dispatcher the settings describe."""
        return cls(
            str(settings.require("secret_key")), UrlPolicy.from_settings(settings), plugins,
            timeout=float(settings.webhook_timeout_seconds),
            concurrency=int(settings.webhook_concurrency),
            endpoint_concurrency=int(settings.webhook_endpoint_concurrency),
            **options,
        )

    def claim(self, limit: int = 50) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries of enabled, unpaused webhooks."""
        return claim_due(limit, lease=self.lease,
                         endpoint_concurrency=self.endpoint_concurrency,
                         tenant_id=self.tenant_id)

    def attempt(self, claimed: Claimed) -> PostResult:
        """Check the URL again, sign and POST one delivery."""
        try:
            checked = check_webhook_url(claimed.url, self.policy, self.resolve)
        except ValidationError as ex:
            return PostResult(0, f"refused: {ex}")
        # APPSEC: receivers see the public ids the API shows, never global sequence values.
        ids = public_ids(self.secret_key)
        tenant = _as_uuid(claimed.tenant_id)
        payload = ids.public_event_payload(tenant, claimed.payload)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        secret = decrypt(self.secret_key, claimed.secret_encrypted)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SwiftMail-Webhooks/1",
            SIGNATURE_HEADER: sign_payload(secret, body),
            "SwiftMail-Delivery": ids.encode("webhook_delivery", tenant, int(claimed.delivery_id)),
            "SwiftMail-Event": str(claimed.payload.get("type", "")),
        }
        return post(checked, body, headers, timeout=self.timeout)

    def finish(self, claimed: Claimed, result: PostResult) -> bool:
        """Log the attempt; schedule a retry, abandon, or disable the webhook.

        Returns False, recording nothing, when the claim's lease was lost
        (expired and reclaimed): another deliverer owns the delivery now.
        """
        tenant, delivery = str(claimed.tenant_id), claimed.delivery_id
        webhook = str(claimed.webhook_id)
        guard = (tenant, delivery, claimed.lease_token)
        disabled = False
        with system_tx() as database:
            if result.ok:
                updated = database.execute_sql(
                    "UPDATE webhook_deliveries SET status = 'succeeded', "
                    "attempts = attempts + 1, response_status = %s, response_excerpt = %s, "
                    "lease_expires_at = NULL, lease_token = NULL, updated_at = now() "
                    "WHERE tenant_id = %s AND id = %s AND status = 'delivering' "
                    "AND lease_token = %s",
                    (result.status, result.excerpt, *guard),
                ).rowcount
                if updated != 1:
                    return self._lost(claimed)
                database.execute_sql(
                    "UPDATE webhooks SET consecutive_failures = 0, paused_until = NULL, "
                    "updated_at = now() WHERE tenant_id = %s AND id = %s", (tenant, webhook),
                )
                slot_freed(database, tenant, webhook)
                with self._lock:
                    self._paused.pop(claimed.endpoint, None)
                return True
            now = datetime.datetime.now(datetime.UTC)
            retry_at = now + next_delay(claimed.attempts + 1)
            give_up = retry_at - claimed.created_at > self.retry_window
            updated = database.execute_sql(
                "UPDATE webhook_deliveries SET status = %s, attempts = attempts + 1, "
                "next_attempt_at = %s, response_status = %s, response_excerpt = %s, "
                "lease_expires_at = NULL, lease_token = NULL, updated_at = now() "
                "WHERE tenant_id = %s AND id = %s AND status = 'delivering' "
                "AND lease_token = %s",
                ("abandoned" if give_up else "pending", retry_at,
                 result.status or None, result.excerpt, *guard),
            ).rowcount
            if updated != 1:
                return self._lost(claimed)
            # NOTE: the pause is epoch seconds through the immutable to_timestamp():
            # Citus refuses now() + an interval of a column (a STABLE operator) in an
            # UPDATE; the transaction's now() is read once and passed as a value.
            (started,) = database.execute_sql("SELECT now()").fetchone()
            failures, enabled, paused_until = database.execute_sql(
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, "
                "paused_until = to_timestamp(%s::float8 + least(%s::float8 * "
                "power(2, least(consecutive_failures, 16)), %s::float8)), "
                "updated_at = now() WHERE tenant_id = %s AND id = %s "
                "RETURNING consecutive_failures, enabled, paused_until",
                (started.timestamp(), FIRST_RETRY.total_seconds(), MAX_RETRY.total_seconds(),
                 tenant, webhook),
            ).fetchone()
            with self._lock:
                self._paused[claimed.endpoint] = paused_until
            if give_up and enabled:
                reason = (f"deliveries failed for {self.retry_window} "
                          f"({failures} failures in a row); last: {result.excerpt[:200]}")
                database.execute_sql(
                    "UPDATE webhooks SET enabled = false, disabled_reason = %s, "
                    "updated_at = now() WHERE tenant_id = %s AND id = %s",
                    (reason, tenant, webhook),
                )
                disabled = True
            slot_freed(database, tenant, webhook)
        log.info("webhook_delivery_failed", tenant_id=tenant, webhook_id=webhook,
                 delivery_id=delivery, status=result.status, paused_until=str(paused_until))
        if disabled:
            record_events([EventRecord(
                claimed.tenant_id, "webhook_disabled",
                source_key=f"webhook_disabled:{claimed.webhook_id}:{delivery}",
                detail={"webhook_id": webhook, "url": claimed.url},
            )], self.plugins)
            log.warning("webhook_disabled", tenant_id=tenant, webhook_id=webhook)
        return True

    @staticmethod
    def _lost(claimed: Claimed) -> bool:
        log.warning("webhook_result_ignored", reason="lease lost",
                    tenant_id=str(claimed.tenant_id), delivery_id=claimed.delivery_id)
        return False

    def deliver_one(self, claimed: Claimed) -> None:
        """Attempt one claimed delivery and record it; never raises."""
        try:
            with self._lock:
                paused_until = self._paused.get(claimed.endpoint)
            if paused_until and paused_until > datetime.datetime.now(datetime.UTC):
                release(claimed, paused_until)  # paused since the claim: not its turn
                return
            if time.monotonic() + 3 * self.timeout > claimed.lease_deadline:
                release(claimed)  # too little lease left to finish the POST in
                return
            try:
                result = self.attempt(claimed)
            except Exception as ex:  # e.g. a secret that no longer decrypts
                log.warning("webhook_attempt_failed", tenant_id=str(claimed.tenant_id),
                            delivery_id=claimed.delivery_id, error=str(ex))
                result = PostResult(0, f"not sent: {ex}"[:1000])
            self.finish(claimed, result)
        except Exception:
            # Left 'delivering': the sweeper reclaims it when the lease expires.
            log.exception("webhook_delivery_not_recorded", tenant_id=str(claimed.tenant_id),
                          delivery_id=claimed.delivery_id)

    def deliver_due(self, limit: int = 500) -> int:
        """Claim and attempt due deliveries concurrently; return how many were claimed.

        Claims as many as there are free threads, and more as each POST ends,
        until nothing is due and nothing is in flight (or ``limit`` claims).
        """
        claimed_count = 0
        in_flight: set[Future] = set()
        with self._lock:
            self._paused.clear()  # pauses seen in this round only; claims read the table
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="swiftmail-webhook") as pool:
            while True:
                free = min(self.concurrency - len(in_flight), limit - claimed_count)
                if free > 0:
                    for item in self.claim(free):
                        in_flight.add(pool.submit(self.deliver_one, item))
                        claimed_count += 1
                if not in_flight:
                    return claimed_count
                _, in_flight = wait(in_flight, timeout=self.poll_seconds,
                                    return_when=FIRST_COMPLETED)


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
