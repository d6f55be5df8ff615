"""``Idempotency-Key`` on POST, stored in the ``idempotency_keys`` table.

The first request with a key reserves it (a committed row with no response
yet), runs, and stores its status, body and content type: in the same
transaction as the work when the resource runs in the middleware's
``tenant_tx`` (so a committed effect always has its stored response), else
in a transaction of its own right after. A repeat with the
same caller (API key or user, role and scopes), method, path and body
replays that response (``Idempotent-Replayed: true``); from another caller
or with a different body it is a 422; a response that carried a secret
(``replay_omits`` on the resource: a new API key, a webhook secret) is
stored and replayed without it; while the first is still running
it is a 409. The primary key (tenant, key) makes the reservation race-free.
Keys expire after 24 hours; a reservation whose request died without an
answer is taken over after ``ABANDONED``. A 5xx releases the key so a retry
can run again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable

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

    def begin(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """Reserve ``key`` or answer the request from the stored response."""
        self._maybe_sweep()
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise ValidationError.for_field(
                "Idempotency-Key", "must be 1 to 255 printable characters")
        tenant_id = req.context.principal.tenant_id
        fingerprint = request_hash(req)
        now = utcnow()
        with tenant_tx(tenant_id) as database:
            reserved = database.execute_sql(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, method, path, "
                "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, key) DO NOTHING RETURNING key",
                (str(tenant_id), key, fingerprint, req.method, req.path, now, now + LIFETIME),
            ).fetchone()
            if reserved is None:
                row = (IdempotencyKey.select()
                       .where(IdempotencyKey.key == key).for_update().get())
                stale = row.expires_at <= now or (
                    row.response_status is None and row.created_at <= now - ABANDONED)
                if stale:
                    (IdempotencyKey.update(
                        request_hash=fingerprint, method=req.method, path=req.path,
                        response_status=None, response_body=None, response_headers={},
                        created_at=now, expires_at=now + LIFETIME)
                     .where(IdempotencyKey.key == key).execute())
                elif bytes(row.request_hash) != fingerprint:
                    raise ValidationError.for_field(
                        "Idempotency-Key",
                        "was already used with a different request or by another caller; "
                        "use a new key")
                elif row.response_status is None:
                    raise ConflictError(
                        "a request with this Idempotency-Key is still in progress; retry later")
                else:
                    resp.status = row.response_status
                    headers = row.response_headers or {}
                    resp.content_type = headers.get("content-type", "application/json")
                    if headers.get("location"):
                        resp.set_header("Location", headers["location"])
                    resp.data = bytes(row.response_body or b"")
                    resp.set_header("Idempotent-Replayed", "true")
                    resp.complete = True
                    return
        req.context.idempotency = key

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
