"""The open pixel and click redirect as an ASGI app, with batched ``XADD``s.

``swiftmail tracking serve`` (uvicorn with the factory
``swiftmail_web.public.asgi_server:create_served_app``, which builds this
app with ``create_app`` and then freezes start-up's objects) serves only
``/t/o/{token}.gif`` and ``/t/c/{token}``, the
hot path. Each request still waits until its hit is in Redis before it is
answered (a hit is acknowledged only once stored), but the hits of all
requests in flight in the worker at that moment go to Redis in one pipelined
round trip: ``HitBatcher`` collects them for one event-loop turn.
Subscriber pages stay on the WSGI app (``swiftmail_web.public.wsgi``).
"""

from __future__ import annotations

import asyncio

import falcon
import falcon.asgi
import redis.asyncio
import structlog
from swiftmail_web.iri import iri_to_uri
from swiftmail_web.public.tracking import NO_STORE, PIXEL, safe_destination

from swiftmail_core import tokens
from swiftmail_core.errors import ValidationError
from swiftmail_core.tracking_ingest import Hit
from swiftmail_core.tracking_ingest.stream import DEFAULT_MAXLEN

log = structlog.get_logger("swiftmail.tracking")
NOT_FOUND = (b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
             b"<p>This link is not valid. Please check that it was copied completely.</p>")


class HitBatcher:
    """Append hits to the stream, many requests per pipelined round trip."""

    def __init__(self, client: redis.asyncio.Redis, stream: str,
                 maxlen: int | None = DEFAULT_MAXLEN) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self._waiting: list[tuple[dict[str, str], asyncio.Future]] = []
        self._flushing = False
        self._task: asyncio.Task | None = None

    async def add(self, hit: Hit) -> None:
        """Return once the hit is in Redis (raise if it could not be stored)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((hit.to_fields(), future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._start_flush)
        await future

    def _start_flush(self) -> None:
        self._task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                pipe = self.client.pipeline(transaction=False)
                for fields, _ in batch:
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
            except Exception as ex:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(ex)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        self._flushing = False


class _Hot:
    def __init__(self, services, batcher: HitBatcher) -> None:
        self.services = services
        self.batcher = batcher

    def _ip(self, req: falcon.asgi.Request) -> str:
        return self.services.config.client_address(req.remote_addr,
                                                   req.get_header("X-Forwarded-For"))

    @staticmethod
    def _prefetch(req: falcon.asgi.Request) -> bool:
        purpose = (req.get_header("Sec-Purpose") or req.get_header("Purpose") or "").lower()
        return "prefetch" in purpose or (req.get_header("X-Moz") or "").lower() == "prefetch"

    async def _record(self, hit: Hit) -> None:
        try:
            await self.batcher.add(hit)
        except Exception as ex:  # the visitor still gets their answer
            log.error("tracking_hit_not_stored", kind=hit.kind, error=str(ex))


class AsyncOpenPixel(_Hot):
    """``GET /t/o/{token}.gif`` (see ``web.public.tracking.OpenPixelResource``)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     token: str) -> None:
        """Answer the GIF; store the open first when the token verifies."""
        resp.content_type = "image/gif"
        resp.cache_control = [NO_STORE]
        resp.data = PIXEL
        try:
            opened = tokens.read_open_token(self.services.secret_key, token)
        except ValidationError:
            return
        await self._record(Hit("open", opened.tenant_id, opened.message_id, ip=self._ip(req),
                               user_agent=req.user_agent or "", method=req.method,
                               prefetch=self._prefetch(req)))

    on_head = on_get


class AsyncClick(_Hot):
    """``GET /t/c/{token}`` (see ``web.public.tracking.ClickResource``)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     token: str) -> None:
        """Redirect to the stored URL of the signed link only."""
        # APPSEC: the destination is only ever the stored URL of the signed link.
        try:
            click = tokens.read_click_token(self.services.secret_key, token)
        except ValidationError:
            click = None
        destination = None
        if click is not None:
            url = self.services.links.cached(click.tenant_id, click.link_id)
            if url is False:  # first click on this link in this process
                url = await asyncio.to_thread(
                    self.services.links.lookup, click.tenant_id, click.link_id)
            destination = safe_destination(url)
        if click is None or destination is None:
            resp.status = falcon.HTTP_404
            resp.content_type = "text/html; charset=utf-8"
            resp.data = NOT_FOUND
            return
        await self._record(Hit("click", click.tenant_id, click.message_id, link_id=click.link_id,
                               ip=self._ip(req), user_agent=req.user_agent or "",
                               method=req.method, prefetch=self._prefetch(req)))
        resp.status = falcon.HTTP_302
        resp.set_header("Location", iri_to_uri(destination))
        resp.cache_control = [NO_STORE]
        resp.set_header("Referrer-Policy", "no-referrer")

    on_head = on_get


def create_app() -> falcon.asgi.App:
    """Load settings, connect, and build the ASGI hot-path application."""
    from swiftmail_web.public.services import PublicServices

    from swiftmail_core.logs import configure_logging
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    runtime = start(settings, process=ProcessKind.PUBLIC_ASGI)
    services = PublicServices.build(settings, runtime.redis, runtime.plugins)
    from swiftmail_core import redis_clients

    return build_app(services, redis_clients.async_client(
        settings, timeout=services.config.redis_timeout_ms / 1000, retries=0))


def build_app(services, client: redis.asyncio.Redis) -> falcon.asgi.App:
    """Build the hot-path app from the public services and an async Redis client."""
    batcher = HitBatcher(client, services.config.stream)
    app = falcon.asgi.App()
    app.add_route("/t/o/{token}.gif", AsyncOpenPixel(services, batcher))
    app.add_route("/t/c/{token}", AsyncClick(services, batcher))
    return app
