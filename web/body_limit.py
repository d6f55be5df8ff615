"""Every request body is bounded before anything reads it.

Each resource may declare ``max_body_bytes`` (default ``DEFAULT_LIMIT``); a
declared ``Content-Length`` over it is refused with 413 before a byte is
read, and a body sent without one (chunked) is cut off with 413 as soon as
it passes the limit while streaming. The middleware runs before the
idempotency middleware, which buffers or spools bodies, and before any
resource (provider webhooks included) reads one.
"""

from __future__ import annotations

from typing import Any

import falcon

from swiftmail_core.errors import SwiftMailError

DEFAULT_LIMIT = 1_000_000


class PayloadTooLargeError(SwiftMailError):
    """A request body over the route's limit."""

    problem_type = "payload-too-large"
    title = "Payload too large"
    status = 413


class LimitedStream:
    """A readable stream that refuses to give more than ``limit`` bytes."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.seen = 0

    def read(self, size: int | None = -1) -> bytes:
        """Read like the wrapped stream; raise 413 once past the limit."""
        wanted = self.limit + 1 - self.seen if size is None or size < 0 else min(
            size, self.limit + 1 - self.seen)
        data = self.stream.read(max(wanted, 0)) if wanted > 0 else b""
        self.seen += len(data)
        if self.seen > self.limit:
            raise PayloadTooLargeError(f"the request body is larger than {self.limit} bytes")
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read a line, counted against the limit."""
        data = self.stream.readline(size if size is not None and size >= 0 else self.limit + 1)
        self.seen += len(data)
        if self.seen > self.limit:
            raise PayloadTooLargeError(f"the request body is larger than {self.limit} bytes")
        return data


class BodyLimit:
    """Refuse bodies over the route's limit: from Content-Length, and while streaming."""

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        """Check the declared length; bound the stream to the limit."""
        if resource is None:
            return
        limit = int(getattr(resource, "max_body_bytes", DEFAULT_LIMIT))
        if req.content_length is not None and req.content_length > limit:
            raise PayloadTooLargeError(
                f"the request body ({req.content_length} bytes) is larger than this route's "
                f"limit of {limit} bytes")
        req.stream = LimitedStream(req.stream, limit)
