"""The open pixel and the click redirect: the hot path.

Both verify the token in memory (HMAC, no database), append the hit to the
Redis stream (one ``XADD``) and answer. The pixel answers the same GIF for
any token; the click redirects only to the URL stored for the signed link id.
"""

from __future__ import annotations

import base64
import urllib.parse

import falcon
import structlog
from swiftmail_web.iri import iri_to_uri
from swiftmail_web.public.pages import html_error
from swiftmail_web.public.services import PublicServices

from swiftmail_core import tokens
from swiftmail_core.errors import ValidationError
from swiftmail_core.tracking_ingest import Hit

log = structlog.get_logger("swiftmail.tracking")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, private, max-age=0"


def client_ip(req: falcon.Request, services: PublicServices) -> str:
    """Return the visitor's address: what the trusted proxies appended, else the peer's."""
    return services.config.client_address(req.remote_addr, req.get_header("X-Forwarded-For"))


def _is_prefetch(req: falcon.Request) -> bool:
    purpose = (req.get_header("Sec-Purpose") or req.get_header("Purpose") or "").lower()
    return "prefetch" in purpose or (req.get_header("X-Moz") or "").lower() == "prefetch"


def _record(services: PublicServices, hit: Hit) -> None:
    try:
        services.stream.add(hit)
    except Exception as ex:  # the visitor still gets their answer
        log.error("tracking_hit_not_stored", kind=hit.kind, error=str(ex))


class OpenPixelResource:
    """``GET /t/o/{token}.gif``: a 1x1 GIF, and an open for a valid token."""

    public = True
    tenant_transaction = False

    def __init__(self, services: PublicServices) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Answer the pixel at once; queue the open when the token verifies."""
        resp.content_type = "image/gif"
        resp.cache_control = [NO_STORE]
        resp.data = PIXEL
        try:
            opened = tokens.read_open_token(self.services.secret_key, token)
        except ValidationError:
            return
        _record(self.services, Hit(
            "open", opened.tenant_id, opened.message_id, ip=client_ip(req, self.services),
            user_agent=req.user_agent or "", method=req.method, prefetch=_is_prefetch(req),
        ))

    on_head = on_get


def safe_destination(url: str | None) -> str | None:
    """Return ``url`` when it is an absolute http(s) URL without control characters."""
    if not url or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


class ClickResource:
    """``GET /t/c/{token}``: redirect to the signed link's stored URL only."""

    public = True
    tenant_transaction = False

    def __init__(self, services: PublicServices) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """Redirect (302) to the stored URL; an invalid token gets a 404 page."""
        # APPSEC: no destination ever comes from the request; only a verified
        # token's link id, looked up in the tenant's link table.
        try:
            click = tokens.read_click_token(self.services.secret_key, token)
        except ValidationError:
            html_error(resp, falcon.HTTP_404, "Link not found",
                       "This link is not valid. Please check that it was copied completely.")
            return
        destination = safe_destination(self.services.links.lookup(click.tenant_id, click.link_id))
        if destination is None:
            html_error(resp, falcon.HTTP_404, "Link not found", "This link no longer exists.")
            return
        _record(self.services, Hit(
            "click", click.tenant_id, click.message_id, link_id=click.link_id,
            ip=client_ip(req, self.services), user_agent=req.user_agent or "",
            method=req.method, prefetch=_is_prefetch(req),
        ))
        resp.status = falcon.HTTP_302
        resp.set_header("Location", iri_to_uri(destination))
        resp.cache_control = [NO_STORE]
        resp.set_header("Referrer-Policy", "no-referrer")

    on_head = on_get
