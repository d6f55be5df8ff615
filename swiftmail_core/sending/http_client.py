"""A small keep-alive HTTP client for transport plugins (one connection per thread)."""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import threading
import urllib.parse
from collections.abc import Mapping

from swiftmail_core.transports import Outcome


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """Status, headers and body of one response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class KeepAliveClient:
    """POST to one base URL over a persistent connection per thread."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            from swiftmail_core.errors import ConfigurationError

            raise ConfigurationError(f"base_url {base_url!r} is not an http(s) URL")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            factory = (http.client.HTTPSConnection if self.scheme == "https"
                       else http.client.HTTPConnection)
            connection = factory(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST ``body``; reconnect once if the kept-alive connection was closed."""
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request("POST", self.prefix + path, body=body, headers=dict(headers))
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()},
                                data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()


def retry_after(headers: Mapping[str, str]) -> datetime.timedelta | None:
    """Return the Retry-After delay (seconds or HTTP date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return datetime.timedelta(seconds=max(0, int(value)))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(datetime.timedelta(0), when - datetime.datetime.now(datetime.UTC))


def outcome_for_status(status: int) -> Outcome:
    """Map an HTTP API status: 2xx accepted; 429, 5xx, 401/403 deferred; other 4xx rejected.

    401/403 mean our credentials or account are wrong, not the message: the
    rows wait for an operator instead of failing.
    """
    if 200 <= status < 300:
        return Outcome.ACCEPTED
    if status in (401, 403, 408, 429) or status >= 500:
        return Outcome.DEFERRED
    return Outcome.REJECTED
