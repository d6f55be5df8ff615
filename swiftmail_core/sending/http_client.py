"""The HTTP client of transport plugins and webhooks: exact about what went out."""

from __future__ import annotations

import dataclasses
import datetime
import urllib.parse
from collections.abc import Mapping

import urllib3

from swiftmail_core.transports import Outcome


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """Status, headers and body of one response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class RequestNotSent(OSError):
    """The request never reached the provider (no connection): safe to send again later."""


class OutcomeUnknown(OSError):
    """The request went out but its answer was lost (a timeout, a reset): never resend."""


class KeepAliveClient:
    """POST to one base URL over pooled keep-alive connections (urllib3).

    APPSEC-adjacent: a POST is retried only when no connection could be made
    (urllib3 also reopens a pooled connection it finds dropped before it sends);
    never after a byte of the request went out, since the provider may have
    acted on it. Such a failure raises ``OutcomeUnknown`` for the caller to
    report as unknown (the provider's events settle it), not to resend.
    """

    def __init__(self, base_url: str, timeout: float = 30.0, *, connect_timeout: float = 10.0,
                 connect_retries: int = 2, ca_certs: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            from swiftmail_core.errors import ConfigurationError

            raise ConfigurationError(f"base_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = urllib3.Timeout(connect=min(connect_timeout, timeout), read=timeout)
        self.retries = connect_only_retries(connect_retries)
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=16, timeout=self.timeout,
                                        retries=self.retries, ca_certs=ca_certs or None)

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST ``body``; raise RequestNotSent or OutcomeUnknown when there is no answer."""
        try:
            response = self.pool.request("POST", self.base_url + path, body=body,
                                         headers=dict(headers), redirect=False)
        except urllib3.exceptions.MaxRetryError as ex:
            raise classify_failure(ex.reason or ex) from ex
        except urllib3.exceptions.HTTPError as ex:
            raise classify_failure(ex) from ex
        return HttpResponse(response.status, {k.lower(): v for k, v in response.headers.items()},
                            response.data)

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.clear()


def connect_only_retries(connect: int) -> urllib3.Retry:
    """Return the retry policy of every outgoing POST: reconnect only, never resend.

    urllib3 retries a connection that could not be made (nothing was sent);
    a read error, a status or a redirect is never retried, because a request
    that went out may have been acted on.
    """
    return urllib3.Retry(total=connect, connect=connect, read=0, status=0, other=0,
                         redirect=0, raise_on_status=False)


def classify_failure(error: BaseException) -> OSError:
    """Return whether a failure happened before the request was sent, or after."""
    not_sent = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                urllib3.exceptions.NameResolutionError)
    if isinstance(error, not_sent):
        return RequestNotSent(str(error))
    return OutcomeUnknown(str(error))


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
