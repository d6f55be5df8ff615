"""The worker's side of the platform intake: spread batches over relays, fail over.

``RelayPool.post`` sends one signed batch to one relay and returns what
became of it. The relays take turns (round robin from a random start per
process), and one that could not be reached or refused is skipped for
``down_seconds`` while others are up. What counts as what:

* no connection could be made (refused, connect timeout, no such host) or
  the TLS handshake failed (an untrusted certificate, no TLS on that port):
  nothing was sent, so the next relay gets the batch;
* the relay answered 401/403 (our signature: the hosts' platform secrets
  differ), 413, 429 or 5xx: it kept nothing (a 2xx comes only once the
  batch is durable), so the next relay gets it;
* 2xx: accepted, durably in that relay's spool;
* 400/422: the batch itself is wrong; another relay would say the same;
* the request went out and the answer was lost (read timeout, reset):
  the relay may have spooled it. Outcome unknown: never sent to another
  relay (urllib3 ``Retry`` reasoning: only a request that never left is
  safe to send again elsewhere). The transport names that relay, and the
  worker sends the batch again to it, and it only (``post(only=...)``),
  once it answers: the relay drops ledger rows it already took
  (``swiftmail_relay.spool_ledger``), so the resend cannot double them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import urllib3
from swiftmail_relay.platform_auth import SIGNATURE_HEADER, sign_request
from swiftmail_relay.platform_intake import INTAKE_PATH

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.sending.http_client import KeepAliveClient, OutcomeUnknown, RequestNotSent

log = structlog.get_logger("swiftmail.relay.intake_client")
DEFAULT_PORT = 2526


@dataclasses.dataclass(frozen=True)
class PostResult:
    """What became of one batch.

    ``kind`` is ``accepted`` (``queue_ids`` in order when the relay said them),
    ``unknown`` (sent, answer lost), ``invalid`` (the batch is wrong:
    ``problem`` is the relay's problem document) or ``refused`` (no relay
    kept it; ``statuses`` has each relay's HTTP status, 0 when unreachable).
    """

    kind: str
    relay: str = ""
    queue_ids: tuple[str, ...] | None = None
    reason: str = ""
    problem: dict[str, Any] | None = None
    statuses: tuple[int, ...] = ()


def relay_url(entry: str) -> str:
    """Return the base URL of a ``relays`` entry: ``HOST:PORT``, ``HOST`` or a URL."""
    text = str(entry).strip()
    if not text:
        raise ConfigurationError("plugins.relay_transport.relays has an empty entry")
    if "://" in text:
        return text.rstrip("/")
    if text.count(":") > 1 and not text.startswith("["):  # a bare IPv6 address
        return f"http://[{text}]:{DEFAULT_PORT}"
    host, sep, port = text.rpartition(":")
    if not sep or port.endswith("]"):
        host, port = text, str(DEFAULT_PORT)
    if not port.isdigit():
        raise ConfigurationError(
            f"plugins.relay_transport.relays entry {entry!r} is not HOST:PORT or a URL")
    return f"http://{host}:{port}"


def parse_relays(value: Any) -> tuple[str, ...]:
    """Return base URLs from a list or a comma-separated string."""
    parts = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    urls = tuple(relay_url(part) for part in parts if str(part).strip())
    if not urls:
        raise ConfigurationError(
            "plugins.relay_transport.relays is empty: list the relays' intake addresses, "
            "e.g. relays = [\"10.0.0.21:2526\", \"10.0.0.22:2526\"] "
            "(SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_RELAYS=10.0.0.21:2526,10.0.0.22:2526)")
    return urls


def parse_moved(value: Any) -> dict[str, str]:
    """Return ``moved_relays`` as {old base URL: new base URL}.

    A table (``{"10.0.0.22:2526" = "10.0.0.21:2526"}``) or ``OLD=NEW,...``.
    """
    if not value:
        return {}
    pairs = value.items() if isinstance(value, dict) else (
        part.split("=", 1) for part in str(value).split(",") if part.strip())
    moved = {}
    for pair in pairs:
        old, new = [*list(pair), ""][:2]
        if not str(new).strip():
            raise ConfigurationError(
                f"plugins.relay_transport.moved_relays entry {pair!r} is not OLD=NEW")
        moved[relay_url(old)] = relay_url(new)
    return moved


class RelayPool:
    """The relays a worker hands mail to, with failover."""

    def __init__(self, relays: Sequence[str], secrets: Callable[[], Sequence[bytes]], *,
                 timeout: float = 30.0, connect_timeout: float = 3.0,
                 down_seconds: float = 10.0, ca_file: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.relays = tuple(relays)
        self.secrets = secrets
        self.down_seconds = down_seconds
        self.clock = clock
        self.timeout, self.connect_timeout, self.ca_file = timeout, connect_timeout, ca_file
        self.clients = {url: KeepAliveClient(url, timeout, connect_timeout=connect_timeout,
                                             connect_retries=0, ca_certs=ca_file)
                        for url in self.relays}
        self._turn = itertools.count(random.randrange(len(self.relays)))
        self._down_until: dict[str, float] = {}

    def order(self) -> list[str]:
        """Return the relays to try, this batch's turn first, those marked down last."""
        start = next(self._turn) % len(self.relays)
        rotated = [*self.relays[start:], *self.relays[:start]]
        now = self.clock()
        up = [url for url in rotated if self._down_until.get(url, 0.0) <= now]
        return up + [url for url in rotated if url not in up]

    def mark_down(self, url: str, seconds: float | None = None) -> None:
        """Skip ``url`` for a while (while other relays are up)."""
        self._down_until[url] = self.clock() + (self.down_seconds if seconds is None else seconds)

    def post(self, body: bytes, *, only: str | None = None) -> PostResult:
        """Hand one batch to the first relay that keeps it; see the module doc.

        ``only``: the one relay to try (a resend goes where the lost answer
        came from, never elsewhere), configured here or not.
        """
        reasons: list[str] = []
        statuses: list[int] = []
        secrets = self.secrets()
        if only is not None and only not in self.clients:
            self.clients[only] = KeepAliveClient(
                only, self.timeout, connect_timeout=self.connect_timeout, connect_retries=0,
                ca_certs=self.ca_file)
        for url in [only] if only is not None else self.order():
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: sign_request(secrets, body)}
            try:
                response = self.clients[url].post(INTAKE_PATH, body, headers)
            except RequestNotSent as ex:
                self.mark_down(url)
                reasons.append(f"{url}: not reachable ({ex})")
                statuses.append(0)
                continue
            except OutcomeUnknown as ex:
                self.mark_down(url)
                if _handshake_refused(ex):
                    reasons.append(f"{url}: TLS handshake failed ({ex}): set ca_file for an "
                                   "untrusted certificate, http:// for an intake without TLS")
                    statuses.append(0)
                    continue
                log.warning("relay_answer_lost", relay=url, error=str(ex))
                return PostResult("unknown", url, reason=f"{url}: answer lost after sending "
                                  f"({ex}); outcome unknown, resent to this relay only")
            if 200 <= response.status < 300:
                return PostResult("accepted", url, queue_ids=_queue_ids(response.body))
            problem = _problem(response.body)
            detail = problem.get("detail") or response.body[:200].decode("utf-8", "replace")
            if response.status in (400, 422):
                return PostResult("invalid", url, reason=f"{url}: {detail}", problem=problem)
            statuses.append(response.status)
            if response.status in (401, 403):
                log.error("relay_refused_signature", relay=url, detail=detail)
                detail = f"{detail} (is relay_platform_secret the same on this host and the relay?)"
            if response.status != 413:
                self.mark_down(url, _retry_after(response.headers, self.down_seconds))
            reasons.append(f"{url}: {response.status} {detail}")
        return PostResult("refused", reason="; ".join(reasons), statuses=tuple(statuses))

    def close(self) -> None:
        """Close every relay's pooled connections."""
        for client in self.clients.values():
            client.close()


#: OpenSSL reasons that only a TLS handshake fails with: no request went out.
HANDSHAKE_ONLY_REASONS = frozenset({
    "WRONG_VERSION_NUMBER",  # the other side does not speak TLS (a plain HTTP intake)
    "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
    "TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE",
})


def _handshake_refused(error: BaseException) -> bool:
    """Return True when the TLS handshake failed (an untrusted certificate, no TLS there).

    Nothing of the request was sent, so another relay may take the batch.
    """
    cause = error.__cause__
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, urllib3.exceptions.SSLError) and any(
        isinstance(arg, ssl.SSLCertVerificationError)
        or (isinstance(arg, ssl.SSLError) and arg.reason in HANDSHAKE_ONLY_REASONS)
        for arg in reason.args)


def _queue_ids(body: bytes) -> tuple[str, ...] | None:
    try:
        ids = json.loads(body)["queue_ids"]
        return tuple(str(i) for i in ids)
    except (ValueError, KeyError, TypeError):
        return None  # a 2xx is durable all the same; only the ids are missing


def _problem(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _retry_after(headers: Any, default: float) -> float:
    try:
        return min(max(float(headers.get("retry-after", default)), 1.0), 300.0)
    except (TypeError, ValueError):
        return default
