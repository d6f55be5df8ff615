"""The platform intake: workers on any host hand mail to this relay over HTTP.

``POST /v1/spool`` takes a batch in the ``swiftmail_relay.intake_wire``
format. APPSEC: only the platform may use it. The body must carry a valid
``SwiftMail-Signature`` made with the platform secret
(``swiftmail_relay.platform_auth``), dated within ``intake_clock_skew`` and
never seen before by any relay (Redis); a tenant's API key is no credential
here, so no tenant can name another tenant's ledger rows. The signature is
checked before the body is parsed, and the body is bounded
(``intake_max_body``) before it is read.

The answer is 200 with the queue ids only once every message of the batch
is durably in the spool (write, fsync, rename, fsync of the directory) and
its ledger rows are recorded (``swiftmail_relay.spool_ledger.write_once``);
a spool that cannot write answers 503 and keeps nothing, so the worker tries
another relay. A ledger row this spool already took (a worker resending a
batch whose answer it lost) is not spooled again: the answer carries the
earlier copy's queue id and lists the message under ``repeats``. Errors are RFC 9457
problem+json naming the field. ``GET /healthz`` answers 200 while the spool
takes writes (503 otherwise) and says whether a deliverer runs on it.

Served by uvicorn inside the relay's own event loop (falcon's ASGI app), on
a socket bound with ``SO_REUSEPORT`` like the submission listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import falcon
import falcon.asgi
import structlog
import uvicorn
from swiftmail_relay import metrics
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.intake_wire import decode_batch
from swiftmail_relay.platform_auth import (
    SIGNATURE_HEADER,
    MemoryReplayGuard,
    ReplayGuard,
    platform_secrets,
    verify_request,
)
from swiftmail_relay.spool import Spool, SpoolError
from swiftmail_relay.spool_ledger import repair_spool, write_once

from swiftmail_core.errors import (
    PROBLEM_BASE,
    AuthenticationError,
    ServiceUnavailableError,
    SwiftMailError,
)
from swiftmail_core.settings import Settings

log = structlog.get_logger("swiftmail.relay.intake")
INTAKE_PATH = "/v1/spool"
HEALTH_PATH = "/healthz"
PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5
#: Bodies read and spooled at once; later requests wait their turn unread, so with
#: intake_max_body this bounds the memory bodies take.
CONCURRENT_BODIES = 32
#: Open connections (keep-alive ones from every worker included); 503 beyond.
MAX_CONNECTIONS = 4096


class PayloadTooLargeError(SwiftMailError):
    """A hand-off body over ``intake_max_body``."""

    problem_type = "payload-too-large"
    title = "Payload too large"
    status = 413


class SpoolResource:
    """``POST /v1/spool``: verify, bound, parse, spool durably, then 200."""

    def __init__(self, config: RelayConfig, spool: Spool, secrets: Sequence[bytes],
                 guard: ReplayGuard,
                 notify: Callable[[Sequence[str]], None] | None = None) -> None:
        self.config = config
        self.spool = spool
        self.secrets = tuple(secrets)
        self.guard = guard
        self.notify = notify
        self._bodies = asyncio.Semaphore(CONCURRENT_BODIES)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Spool a signed batch; answer its queue ids once durable."""
        async with self._bodies:
            await self._spool_batch(req, resp)

    async def _spool_batch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await self._bounded_body(req)
        # APPSEC: the platform secret or nothing; checked before the body is parsed.
        digest = verify_request(self.secrets, req.get_header(SIGNATURE_HEADER) or "", body,
                                tolerance=self.config.intake_clock_skew)
        if digest is None:
            log.warning("intake_signature_refused", peer=req.remote_addr)
            raise AuthenticationError(
                f"{SIGNATURE_HEADER} is missing, wrong or too old: the intake takes only "
                "requests signed with the platform secret (relay_platform_secret), never a "
                "tenant credential")
        try:
            fresh = await self.guard.first_use(digest, 2 * self.config.intake_clock_skew + 1)
        except Exception as ex:
            raise ServiceUnavailableError(f"cannot check for replays now: {ex}") from ex
        if not fresh:
            log.warning("intake_replay_refused", peer=req.remote_addr)
            raise AuthenticationError(f"this {SIGNATURE_HEADER} was already used (a replay)")
        # Parsing and header checks take ~1 ms a message: never on the relay's loop.
        items = await asyncio.to_thread(
            decode_batch, body, max_message_size=self.config.max_message_size)
        try:
            answers = await asyncio.to_thread(write_once, self.spool, items)
        except SpoolError as ex:
            log.error("spool_write_failed", error=str(ex), source="intake")
            # Nothing was kept: the worker hands this same request to the next relay,
            # which shares the replay memory and must not take it for a replay.
            with contextlib.suppress(Exception):
                await self.guard.forget(digest)
            raise ServiceUnavailableError(f"the spool cannot take the batch: {ex}") from ex
        # The batch is durable: from here on the answer is 200 whatever happens (a 5xx
        # would send the worker to the next relay, and the mail out twice).
        queue_ids = [queue_id for queue_id, _ in answers]
        new_ids = [queue_id for queue_id, repeat in answers if not repeat]
        repeats = [index for index, (_, repeat) in enumerate(answers) if repeat]
        try:
            metrics.ACCEPTED.labels(source="intake").inc(len(new_ids))
            if repeats:
                log.info("intake_repeats_dropped", count=len(repeats), peer=req.remote_addr)
            if self.notify is not None and new_ids:
                self.notify(new_ids)
        except Exception:
            log.exception("intake_wake_up_failed", queued=len(new_ids))  # the scan finds them
        resp.status = falcon.HTTP_200
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"queue_ids": queue_ids, "repeats": repeats}).encode()

    async def _bounded_body(self, req: falcon.asgi.Request) -> bytes:
        limit = self.config.intake_max_body
        if req.content_length is not None and req.content_length > limit:
            raise PayloadTooLargeError(f"the body is larger than intake_max_body ({limit} bytes)")
        chunks: list[bytes] = []
        seen = 0
        async for chunk in req.stream:
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLargeError(
                    f"the body is larger than intake_max_body ({limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)


class HealthResource:
    """``GET /healthz``: 200 while this relay can spool (for load balancers, probes)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Answer whether the spool takes writes and whether a deliverer runs on it."""
        from swiftmail_relay.spool_lock import deliverer_running

        writable = os.access(self.spool.tmp, os.W_OK) and os.access(self.spool.queue, os.W_OK)
        resp.status = falcon.HTTP_200 if writable else falcon.HTTP_503
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"spool_writable": writable,
                                "delivering": deliverer_running(self.spool.root)}).encode()


async def _render_error(req: falcon.asgi.Request, resp: falcon.asgi.Response,
                        ex: Exception, params: dict[str, Any]) -> None:
    """Answer any error as RFC 9457 problem+json, never with internals."""
    if isinstance(ex, SwiftMailError):
        body = ex.to_problem()
        if isinstance(ex, ServiceUnavailableError):
            resp.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
    elif isinstance(ex, falcon.HTTPError):
        body = {"type": PROBLEM_BASE + "error", "title": ex.title or "",
                "status": ex.status_code, "detail": ex.description or ex.title or ""}
    else:
        log.exception("intake_failed", path=req.path)
        body = {"type": PROBLEM_BASE + "internal", "title": "Internal server error",
                "status": 500, "detail": "an unexpected error occurred"}
    body["instance"] = req.path
    resp.status = body["status"]
    resp.content_type = PROBLEM_JSON
    resp.data = json.dumps(body).encode()


def create_app(config: RelayConfig, spool: Spool, secrets: Sequence[bytes], guard: ReplayGuard,
               notify: Callable[[Sequence[str]], None] | None = None) -> falcon.asgi.App:
    """Return the intake's ASGI app."""
    app = falcon.asgi.App()
    app.add_route(INTAKE_PATH, SpoolResource(config, spool, secrets, guard, notify))
    app.add_route(HEALTH_PATH, HealthResource(spool))
    app.add_error_handler(Exception, _render_error)
    return app


class _LoopServer(uvicorn.Server):
    """uvicorn inside the relay's loop: the relay, not uvicorn, handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone."""
        yield


class IntakeServer:
    """A running intake: ``close`` stops it (like an ``asyncio.Server``)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None],
                 address: tuple[str, int]) -> None:
        self.server = server
        self.task = task
        self.address = address

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """Return the context the intake serves TLS with (``intake_tls``), for reloads."""
        return self.server.config.ssl if self.server.config.is_ssl else None

    def close(self) -> None:
        """Stop accepting; in-flight requests finish."""
        self.server.should_exit = True

    async def wait_closed(self) -> None:
        """Wait until the server has stopped."""
        await asyncio.gather(self.task, return_exceptions=True)


def bind(host: str, port: int) -> socket.socket:
    """Return a listening socket with SO_REUSEPORT (several intake processes per port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_intake(
    settings: Settings,
    config: RelayConfig,
    *,
    guard: ReplayGuard | None = None,
    notify: Callable[[Sequence[str]], None] | None = None,
    listen: tuple[str, int] | None = None,
    spool: Spool | None = None,
) -> IntakeServer:
    """Start the intake in the running loop; return once it listens.

    Raises ConfigurationError when no platform secret can be had.
    """
    host, port = listen or config.intake_listen or ("127.0.0.1", 2526)
    secrets = platform_secrets(settings)
    spool = spool or Spool(config.spool_dir)
    # A crash may have left a spooled message without its ledger record: close that
    # gap before answering anyone, or a resend of it would be spooled twice.
    repaired = await asyncio.to_thread(repair_spool, spool.root)
    if repaired:
        log.warning("spool_ledger_repaired", records=repaired)
    app = create_app(config, spool, secrets,
                     guard or MemoryReplayGuard(), notify)
    tls: dict[str, Any] = {}
    if config.intake_tls:
        tls = {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key or None}
    sock = bind(host, port)
    server = _LoopServer(uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False,
        limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=30, **tls))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise ServiceUnavailableError(f"the platform intake on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    address = sock.getsockname()[:2]
    log.info("intake_listening", host=address[0], port=address[1], tls=config.intake_tls)
    return IntakeServer(server, task, (address[0], address[1]))
