"""One HTTP POST to a checked address: pinned IP, no redirects, bounded."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl

from swiftmail_core.webhooks.urls import CheckedUrl

RESPONSE_LIMIT = 64 * 1024
EXCERPT_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class PostResult:
    """What the receiver answered (status 0 when the connection failed)."""

    status: int
    excerpt: str

    @property
    def ok(self) -> bool:
        """Return whether the receiver accepted the delivery (2xx)."""
        return 200 <= self.status < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the URL's host name (SNI too).
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(
    checked: CheckedUrl,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = 10.0,
    response_limit: int = RESPONSE_LIMIT,
) -> PostResult:
    """POST ``body`` to the first reachable checked address; never follow redirects."""
    last_error = "no address"
    for address in checked.addresses:
        cls = _PinnedHTTPSConnection if checked.scheme == "https" else _PinnedHTTPConnection
        connection = cls(address, checked.host, checked.port, timeout)
        try:
            connection.request("POST", checked.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(response_limit)
            # NOTE: a 3xx is a failure: redirects are never followed (SSRF).
            return PostResult(response.status, data[:EXCERPT_LIMIT].decode("utf-8", "replace"))
        except (OSError, http.client.HTTPException) as ex:
            last_error = f"{type(ex).__name__}: {ex}"
        finally:
            connection.close()
    return PostResult(0, last_error[:EXCERPT_LIMIT])
