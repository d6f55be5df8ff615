"""The request pipeline, in order: context, authentication, guard, idempotency, transaction.

- ``RequestContext``: ``X-Request-ID`` (honoured if sane, else generated),
  log context, one JSON access-log line and Prometheus metrics.
- ``Authenticate``: asks the auth plugins (``plugin_manager.authenticate``)
  for the principal; the tenant comes from the credential, never the URL.
- ``Guard``: per-resource policy (deny by default) and rate limits.
- ``Idempotency``: ``Idempotency-Key`` on POST (see ``web.idempotency``).
- ``TenantTransaction``: opens ``tenant_tx(principal.tenant_id)`` around the
  responder of every resource with ``tenant_transaction = True`` (the
  default for non-public resources); commits on success, rolls back on any
  error, so nothing is half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import time
import uuid
from typing import Any

import falcon
import structlog
from swiftmail_web import access, metrics
from swiftmail_web.idempotency import IdempotencyStore
from swiftmail_web.jsonio import MAX_BODY
from swiftmail_web.query_params import check_query_parameters
from swiftmail_web.ratelimit import RateLimiter

from swiftmail_core.errors import ValidationError
from swiftmail_core.principal import Credentials

log = structlog.get_logger("swiftmail.web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _RequestFailed(Exception):
    """Passed into the tenant transaction to make it roll back."""


class RequestContext:
    """Request id, log context, access log and metrics."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Give the request an id and bind it to every log line."""
        given = req.get_header("X-Request-ID")
        req.context.request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        req.context.started = time.perf_counter()
        req.context.principal = None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=req.context.request_id)
        resp.set_header("X-Request-ID", req.context.request_id)
        # PostgreSQL text cannot hold NUL: refuse it once here, for every route.
        if "\x00" in req.path or "%00" in (req.query_string or ""):
            raise ValidationError("NUL characters are not allowed in the URL",
                                  errors=[{"field": "url", "message": "contains NUL"}])

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Log the request and record its metrics."""
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started else 0.0
        route = req.uri_template or "unmatched"
        status = resp.status_code if hasattr(resp, "status_code") else int(str(resp.status)[:3])
        metrics.observe(req.method, route, status, elapsed)
        log.info("request", method=req.method, route=route, status=status,
                 duration_ms=round(elapsed * 1000, 2))
        structlog.contextvars.clear_contextvars()


class Authenticate:
    """Resolve the Authorization header to a principal through the auth hook."""

    def __init__(self, plugin_manager: Any) -> None:
        self.plugins = plugin_manager

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Set ``req.context.principal`` (None when no credential was sent)."""
        header = req.get_header("Authorization")
        if not header:
            return
        credentials = Credentials(
            authorization=header,
            remote_addr=req.remote_addr,
            headers={k.lower(): v for k, v in req.headers.items() if k.lower() != "authorization"},
        )
        # APPSEC: the principal (and so the tenant) is fixed here, by the credential alone.
        principal = self.plugins.authenticate(credentials)
        if principal is None:
            from swiftmail_core.errors import AuthenticationError

            raise AuthenticationError("unrecognised credentials: use Bearer sm_live_...")
        req.context.principal = principal
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant_id))


class Guard:
    """Check the resource's policy for the method, then the rate limits."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        """Refuse what the principal may not do, then count the request."""
        if resource is None:
            return
        policy = access.check(resource, req.method, req.context.principal)
        if policy is None or req.context.principal is None:
            return
        self.limiter.hit(req.context.principal, resp)
        check_query_parameters(req, resource)


UPLOAD_MEMORY = 1024 * 1024
UPLOAD_CHUNK = 64 * 1024


def _spool_upload(stream: Any) -> tuple[Any, bytes]:
    """Copy an upload to a spooled temp file, hashing it; return (file at 0, digest)."""
    spooled = tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY)
    digest = hashlib.sha256()
    while chunk := stream.read(UPLOAD_CHUNK):
        digest.update(chunk)
        spooled.write(chunk)
    spooled.seek(0)
    return spooled, digest.digest()


class Idempotency:
    """Replay a POST's stored response for a repeated ``Idempotency-Key``."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        """Reserve the key, or answer from the stored response."""
        req.context.idempotency = None
        req.context.idempotency_pending = None
        if req.method != "POST" or resource is None or getattr(resource, "public", False):
            return
        key = req.get_header("Idempotency-Key")
        if key is None:
            return
        req.context.replay_omits = tuple(getattr(resource, "replay_omits", ()))
        content_type = (req.content_type or "application/json").split(";")[0].strip().lower()
        if content_type.endswith("json"):
            # APPSEC: bound what is buffered; a JSON body over the limit is refused.
            body = req.bounded_stream.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValidationError.for_field("body", f"must be at most {MAX_BODY} bytes")
            req.context.body_bytes = body
        else:
            # Uploads (CSV imports) are hashed while they are spooled: at most
            # UPLOAD_MEMORY bytes stay in memory, the rest goes to a temp file.
            req.context.body_file, req.context.body_digest = _spool_upload(req.bounded_stream)
        if runs_in_tenant_transaction(resource, req):
            # Reserved inside the work's transaction (TenantTransaction), so the key,
            # the work and the stored response commit together.
            self.store.check_key(key)
            req.context.idempotency_pending = key
        else:
            self.store.begin(req, resp, key)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Store the response for replays (or release the key after a 5xx)."""
        if getattr(req.context, "idempotency", None) is not None:
            self.store.finish(req, resp)


class TenantTransaction:
    """Run the responder inside ``tenant_tx(principal.tenant_id)``."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        """Open the tenant transaction for tenant-data resources."""
        from swiftmail_core.db import tenant_tx

        if not runs_in_tenant_transaction(resource, req):
            return
        stack = contextlib.ExitStack()
        # APPSEC: the tenant is the credential's, never the URL's or the body's.
        database = stack.enter_context(tenant_tx(req.context.principal.tenant_id))
        req.context.transaction = stack
        pending = getattr(req.context, "idempotency_pending", None)
        if pending is not None:
            try:
                self.store.begin_in_transaction(req, resp, pending, database)
            except BaseException as ex:
                req.context.transaction = None
                stack.__exit__(type(ex), ex, ex.__traceback__)
                raise

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Commit when the responder succeeded with a non-error status, else roll back."""
        stack: contextlib.ExitStack | None = getattr(req.context, "transaction", None)
        if stack is None:
            return
        req.context.transaction = None
        status = resp.status_code if hasattr(resp, "status_code") else int(str(resp.status)[:3])
        if req_succeeded and status < 400:
            try:
                if getattr(req.context, "idempotency", None) is not None:
                    # The stored response commits with the work, or not at all.
                    self.store.record(req, resp)
            except BaseException as ex:
                # NOTE: always leave the transaction, or this thread's next
                # request would find it still open.
                stack.__exit__(type(ex), ex, ex.__traceback__)
                raise
            stack.close()
            req.context.idempotency = None
        else:
            failure = _RequestFailed()
            stack.__exit__(_RequestFailed, failure, None)
            if getattr(req.context, "idempotency", None) is not None:
                if 400 <= status < 500:
                    # The work rolled back with its reservation; the refusal is kept
                    # for replays. A 5xx keeps nothing, so a retry runs again.
                    self.store.record_refusal(req, resp)
                req.context.idempotency = None


def runs_in_tenant_transaction(resource: Any, req: falcon.Request) -> bool:
    """Return True when the responder runs inside the request's ``tenant_tx``."""
    wants = getattr(resource, "tenant_transaction", not getattr(resource, "public", False))
    return bool(resource is not None and req.context.principal is not None and wants)
