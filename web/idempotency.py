"""``Idempotency-Key`` on POST, stored in the ``idempotency_keys`` table.

A resource that runs in the request's ``tenant_tx`` (the default, and every
POST that sends or creates something) reserves its key INSIDE that
transaction, under a transaction-scoped advisory lock, and stores its
response there too: the reservation, the work and the stored response commit
together or not at all. So a repeat finds either the committed response
(replayed) or nothing (the first request died: it runs again), and while the
first is still running the lock answers 409. There is no stale reservation
to take over and so no way to run the work twice.

A resource that opens its own transactions (it does slow I/O, such as DNS
lookups, outside one) reserves the key in a committed row first and stores
its response right after; a reservation whose request died without an
answer is taken over after ``ABANDONED``. Such work is safe to repeat.

A repeat with the same caller (API key or user, role and scopes), method,
path and body replays the stored response (``Idempotent-Replayed: true``);
from another caller or with a different body it is a 422; a response that
carried a secret (``replay_omits`` on the resource: a new API key, a webhook
secret) is stored and replayed without it. A 4xx is stored for replay; a 5xx
is not, so a retry runs again. Keys expire after 24 hours.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import falcon
from swiftmail_web.jsonio import dumps

from swiftmail_core.db import system_db, system_tx, tenant_tx
from swiftmail_core.errors import ConflictError, ValidationError
from swiftmail_core.models import IdempotencyKey, utcnow

log = logging.getLogger(__name__)
LIFETIME = datetime.timedelta(hours=24)
ABANDONED = datetime.timedelta(minutes=5)


def caller_identity(req: falcon.Request) -> str:
    """Return who is calling: the key (or user), its role and its scopes."""
    principal = req.context.principal
    return "|".join((str(principal.key_id or ""), str(principal.user_id or ""), principal.role,
                     ",".join(sorted(principal.scopes))))


def request_hash(req: falcon.Request) -> bytes:
    """Return the fingerprint of a request: caller, method, path, query and body.

    APPSEC: the caller is part of it, so a stored response replays only to the
    same API key (or user) with the same role and scopes: an admin replaying an
    owner's key creation, or a narrow key replaying a wider request, is refused.
    """
    digest = hashlib.sha256()
    for part in (caller_identity(req), req.method, req.path, req.query_string or ""):
        digest.update(part.encode() + b"\x00")
    spooled = getattr(req.context, "body_digest", None)
    digest.update(spooled if spooled is not None else (req.context.body_bytes or b""))
    return digest.digest()


def sweep_expired(now: datetime.datetime | None = None) -> int:
    """Delete expired keys of every tenant (system role); return how many."""
    with system_tx():
        return int(IdempotencyKey.delete().where(
            IdempotencyKey.expires_at <= (now or utcnow())).bind(system_db).execute())


class IdempotencyStore:
    """Reserve, replay and record responses by (tenant, key).

    Expired keys are swept by each process at most every ``sweep_every``
    (a cheap indexed DELETE through the system role), so the table stays
    bounded without a separate job.
    """

    def __init__(self, sweep_every: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sweep_every = sweep_every
        self.clock = clock
        self._next_sweep = clock() + sweep_every
        self._lock = threading.Lock()

    def _maybe_sweep(self) -> None:
        with self._lock:
            if self.clock() < self._next_sweep:
                return
            self._next_sweep = self.clock() + self.sweep_every
        try:
            sweep_expired()
        except Exception:
            log.warning("idempotency key sweep failed", exc_info=True)

    @staticmethod
    def check_key(key: str) -> None:
        """Refuse a key that is not 1 to 255 printable characters."""
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise ValidationError.for_field(
                "Idempotency-Key", "must be 1 to 255 printable characters")

    def begin(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """Reserve ``key`` in a committed row, or answer from the stored response.

        For resources that open their own transactions; the others use
        ``begin_in_transaction``.
        """
        self._maybe_sweep()
        self.check_key(key)
        with tenant_tx(req.context.principal.tenant_id) as database:
            if self._reserve(database, req, resp, key, take_over_abandoned=True):
                req.context.idempotency = key

    def begin_in_transaction(self, req: falcon.Request, resp: falcon.Response, key: str,
                             database: Any) -> None:
        """Reserve ``key`` inside the request's open ``tenant_tx``, or answer from storage.

        The reservation is uncommitted until the work commits, so it can never
        be found stale while its work runs: a concurrent repeat fails the
        advisory lock (409); a repeat after a crash finds no row and runs.
        """
        self._maybe_sweep()
        self.check_key(key)
        tenant_id = req.context.principal.tenant_id
        locked = database.execute_sql(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"swiftmail.idempotency:{tenant_id}:{key}",)).fetchone()[0]
        if not locked:
            raise ConflictError(
                "a request with this Idempotency-Key is still in progress; retry later")
        if self._reserve(database, req, resp, key, take_over_abandoned=True):
            req.context.idempotency = key

    def _reserve(self, database: Any, req: falcon.Request, resp: falcon.Response, key: str,
                 *, take_over_abandoned: bool) -> bool:
        """Insert the reservation; False when the stored response was replayed."""
        tenant_id = req.context.principal.tenant_id
        fingerprint = request_hash(req)
        now = utcnow()
        reserved = database.execute_sql(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, method, path, "
            "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, key) DO NOTHING RETURNING key",
            (str(tenant_id), key, fingerprint, req.method, req.path, now, now + LIFETIME),
        ).fetchone()
        if reserved is not None:
            return True
        row = IdempotencyKey.select().where(IdempotencyKey.key == key).for_update().get()
        # NOTE: only a committed reservation without a response can be abandoned: one
        # made inside a work transaction commits with its response or disappears.
        abandoned = row.response_status is None and row.created_at <= now - ABANDONED
        if row.expires_at <= now or (abandoned and take_over_abandoned):
            (IdempotencyKey.update(
                request_hash=fingerprint, method=req.method, path=req.path,
                response_status=None, response_body=None, response_headers={},
                created_at=now, expires_at=now + LIFETIME)
             .where(IdempotencyKey.key == key).execute())
            return True
        if bytes(row.request_hash) != fingerprint:
            raise ValidationError.for_field(
                "Idempotency-Key",
                "was already used with a different request or by another caller; use a new key")
        if row.response_status is None:
            raise ConflictError(
                "a request with this Idempotency-Key is still in progress; retry later")
        resp.status = row.response_status
        headers = row.response_headers or {}
        resp.content_type = headers.get("content-type", "application/json")
        if headers.get("location"):
            resp.set_header("Location", headers["location"])
        resp.data = bytes(row.response_body or b"")
        resp.set_header("Idempotent-Replayed", "true")
        resp.complete = True
        return False

    def record(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store the response inside the caller's open ``tenant_tx``.

        Used by the tenant-transaction middleware so that the work and its
        stored response commit together (exactly once, even if the process
        dies right after the commit).
        """
        status = int(str(resp.status)[:3]) if not isinstance(resp.status, int) else resp.status
        omitted = getattr(req.context, "replay_omits", ())
        if resp.media is not None and omitted and isinstance(resp.media, dict):
            # APPSEC: a secret shown once (a new API key, a webhook secret) is never
            # stored in clear for replays: the replay answers without it.
            body = dumps({k: v for k, v in resp.media.items() if k not in omitted}).encode()
        elif resp.data is not None:
            body = resp.data
        elif resp.media is not None:
            body = dumps(resp.media).encode()
        else:
            body = (resp.text or "").encode()
        headers = {"content-type": resp.content_type or "application/json"}
        location = resp.get_header("Location")
        if location:
            headers["location"] = location
        (IdempotencyKey.update(response_status=status, response_body=body,
                               response_headers=json.loads(json.dumps(headers)))
         .where(IdempotencyKey.key == req.context.idempotency).execute())

    def record_refusal(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store a 4xx answer after its work transaction rolled back (for replays)."""
        key = req.context.idempotency
        now = utcnow()
        with tenant_tx(req.context.principal.tenant_id) as database:
            database.execute_sql(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, method, path, "
                "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, key) DO NOTHING",
                (str(req.context.principal.tenant_id), key, request_hash(req), req.method,
                 req.path, now, now + LIFETIME))
            self.record(req, resp)
        req.context.idempotency = None

    def finish(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store the response of a reserved request, or release it after a 5xx."""
        status = int(str(resp.status)[:3]) if not isinstance(resp.status, int) else resp.status
        with tenant_tx(req.context.principal.tenant_id):
            if status >= 500:
                IdempotencyKey.delete().where(
                    IdempotencyKey.key == req.context.idempotency).execute()
            else:
                self.record(req, resp)
        req.context.idempotency = None
