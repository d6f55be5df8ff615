"""Render every error as one RFC 9457 ``application/problem+json`` body.

One serializer for three sources: a ``SwiftMailError`` (it carries its own
type, title and status), a Falcon ``HTTPError`` (routing, 405, bad media) and
any other exception, which is logged with its traceback and answered with a
bare 500 that never carries the traceback to the client.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

import falcon
import structlog

from swiftmail_core.db.failover import is_lost_server
from swiftmail_core.errors import PROBLEM_BASE, SwiftMailError

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("swiftmail.web")

_HTTP_TYPES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    411: "length-required",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    503: "unavailable",
}


class RateLimitedError(SwiftMailError):
    """Too many requests for this tenant or key in the current window."""

    problem_type = "rate-limited"
    title = "Too many requests"
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _write(req: falcon.Request, resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    request_id = getattr(req.context, "request_id", None)
    if request_id:
        body.setdefault("request_id", request_id)
    body.setdefault("instance", req.path)
    resp.status = status
    resp.content_type = PROBLEM_JSON
    resp.media = None
    resp.data = json.dumps(body).encode()


def render_swiftmail_error(
    req: falcon.Request, resp: falcon.Response, ex: SwiftMailError, params: dict[str, Any]
) -> None:
    """Answer a SwiftMailError with its own problem document."""
    if ex.status >= 500:
        log.error("request failed", problem=ex.problem_type, detail=ex.detail)
    if isinstance(ex, RateLimitedError):
        resp.set_header("Retry-After", str(ex.retry_after))
    _write(req, resp, ex.status, ex.to_problem())


def render_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    """Answer a Falcon HTTPError (404 route, 405, bad media) as a problem document."""
    status = ex.status_code
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + _HTTP_TYPES.get(status, "error"),
        "title": ex.title or falcon.code_to_http_status(status)[4:],
        "status": status,
        "detail": ex.description or ex.title or "",
    }
    headers = ex.headers or {}
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        resp.set_header(name, value)
    _write(req, resp, status, body)


#: Seconds a client is told to wait when the database went away mid-request.
RETRY_AFTER_FAILOVER = 5


def render_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Log an unexpected exception with its traceback; tell the client only 500."""
    if isinstance(ex, falcon.HTTPError):
        render_http_error(req, resp, ex, params)
        return
    if isinstance(ex, SwiftMailError):
        render_swiftmail_error(req, resp, ex, params)
        return
    if is_lost_server(ex):
        # A PostgreSQL failover: the next request connects to the new primary.
        log.warning("database unavailable", path=req.path, method=req.method, error=str(ex))
        resp.set_header("Retry-After", str(RETRY_AFTER_FAILOVER))
        _write(req, resp, 503, {
            "type": PROBLEM_BASE + "unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "the database is unavailable (failing over?); retry shortly, with the "
                      "same Idempotency-Key for a POST",
        })
        return
    log.exception("unhandled exception", path=req.path, method=req.method)
    # APPSEC: no exception text or traceback reaches the client.
    _write(req, resp, 500, {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal server error",
        "status": 500,
        "detail": "an unexpected error occurred; quote the request_id when reporting it",
    })


def route_not_found_handler(app: falcon.App) -> Any:
    """Return a handler that answers an unknown route with where to look (and a near miss)."""
    shapes: dict[str, str] = {}

    def render_route_not_found(req: falcon.Request, resp: falcon.Response,
                               ex: falcon.HTTPRouteNotFound, params: dict[str, Any]) -> None:
        if not shapes:  # routes are all added before the first request is served
            from swiftmail_web.openapi import routed_methods

            shapes.update({_shape(path): path for path in routed_methods(app)})
        detail = f"no route {req.method} {req.path}"
        near = difflib.get_close_matches(_shape(req.path), list(shapes), n=1, cutoff=0.75)
        if near:
            detail += f"; did you mean {shapes[near[0]]}?"
        detail += " The API's routes are listed at /v1/openapi.json (docs/api.md)."
        _write(req, resp, 404, {"type": PROBLEM_BASE + "not-found", "title": "Not found",
                                "status": 404, "detail": detail})

    return render_route_not_found


def _shape(path: str) -> str:
    """Return a path with ids and {templates} alike: /v1/contacts/{}."""
    return "/".join("{}" if part.startswith("{") or len(part) > 20 else part
                    for part in path.split("/"))


def install(app: falcon.App) -> None:
    """Register the serializers on ``app`` (most specific last wins in Falcon)."""
    app.add_error_handler(Exception, render_unexpected)
    app.add_error_handler(falcon.HTTPError, render_http_error)
    app.add_error_handler(falcon.HTTPRouteNotFound, route_not_found_handler(app))
    app.add_error_handler(SwiftMailError, render_swiftmail_error)
