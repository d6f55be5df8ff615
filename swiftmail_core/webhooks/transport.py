"""One HTTP POST to a checked address: pinned IP, no redirects, never resent.

The request goes through urllib3 with the transports' retry policy
(``connect_only_retries``): a connection that cannot be made is retried, or
the next checked address is tried; once a byte of the request went out, a
lost answer (reset, timeout) ends the attempt as a failure with its outcome
unknown. The dispatcher retries it later on its backoff schedule with the
same ``SwiftMail-Delivery`` id, so a receiver can drop the duplicate.
"""

from __future__ import annotations

import dataclasses
import ssl
import time

import urllib3

from swiftmail_core.sending.http_client import (
    RequestNotSent,
    classify_failure,
    connect_only_retries,
)
from swiftmail_core.webhooks.urls import CheckedUrl

RESPONSE_LIMIT = 64 * 1024
EXCERPT_LIMIT = 1000
CONNECT_RETRIES = 1


@dataclasses.dataclass(frozen=True)
class PostResult:
    """What the receiver answered (status 0 when there was no answer)."""

    status: int
    excerpt: str

    @property
    def ok(self) -> bool:
        """Return whether the receiver accepted the delivery (2xx)."""
        return 200 <= self.status < 300


def _host_header(checked: CheckedUrl) -> str:
    host = f"[{checked.host}]" if ":" in checked.host else checked.host
    default = 443 if checked.scheme == "https" else 80
    return host if checked.port == default else f"{host}:{checked.port}"


def _pool(checked: CheckedUrl, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    pool_timeout = urllib3.Timeout(connect=min(5.0, timeout), read=timeout)
    retries = connect_only_retries(CONNECT_RETRIES)
    if checked.scheme == "https":
        # The certificate is checked against the URL's host name (SNI too),
        # while the connection goes to the address that passed the SSRF check.
        return urllib3.HTTPSConnectionPool(
            address, checked.port, server_hostname=checked.host, assert_hostname=checked.host,
            ssl_context=ssl.create_default_context(), timeout=pool_timeout, retries=retries,
            maxsize=1)
    return urllib3.HTTPConnectionPool(address, checked.port, timeout=pool_timeout,
                                      retries=retries, maxsize=1)


def post(
    checked: CheckedUrl,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = 10.0,
    response_limit: int = RESPONSE_LIMIT,
) -> PostResult:
    """POST ``body`` once to the first reachable checked address; never follow redirects."""
    last_error = "no address"
    # NOTE: further addresses are tried only within one timeout, so an attempt
    # always ends well inside the dispatcher's lease (3 timeouts + 30 s).
    give_up_at = time.monotonic() + timeout
    for index, address in enumerate(checked.addresses):
        if index and time.monotonic() > give_up_at:
            break
        pool = _pool(checked, address, timeout)
        try:
            response = pool.urlopen(
                "POST", checked.path, body=body,
                headers={**headers, "Host": _host_header(checked)},
                redirect=False, assert_same_host=False, preload_content=False)
            try:
                data = response.read(response_limit)
            finally:
                response.release_conn()
            # NOTE: a 3xx is a failure: redirects are never followed (SSRF).
            return PostResult(response.status, data[:EXCERPT_LIMIT].decode("utf-8", "replace"))
        except urllib3.exceptions.HTTPError as ex:
            reason = ex.reason if isinstance(ex, urllib3.exceptions.MaxRetryError) else ex
            failure = classify_failure(reason or ex)
            if not isinstance(failure, RequestNotSent):
                # The request went out: never send it again in this attempt.
                return PostResult(0, f"outcome unknown: {failure}"[:EXCERPT_LIMIT])
            last_error = f"not sent: {failure}"
        finally:
            pool.close()
    return PostResult(0, last_error[:EXCERPT_LIMIT])
