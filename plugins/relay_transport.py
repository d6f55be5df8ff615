"""The ``relay`` transport: campaign mail into SwiftMail's own relays.

Settings (``[plugins.relay_transport]`` / ``SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_*``):

- ``mode``: ``network`` (default) hands each batch over HTTP to a relay's
  platform intake, on this host or another (``relays``), signed with the
  platform secret; ``handoff`` writes it straight into the spool of the
  relay on this host (same durability, no network, for a worker that shares
  its host with the delivering relay: chosen explicitly, and refused at
  worker start-up and by ``doctor`` when no relay delivers that spool);
  ``smtp`` submits over SMTP with one tenant's API key (a relay serving
  that one tenant).
- ``relays`` (network): intake addresses, ``HOST:PORT`` or ``https://...``
  (default ``127.0.0.1:2526``, the local relay's default intake). Batches
  take turns over them; one that is down or refuses is skipped and the
  next takes the batch; a batch whose answer was lost after sending is
  resent to that same relay only, which drops what it already has
  (``send_unknown_resend_hours``, then the rows stay ``unknown``).
  ``moved_relays`` (``{"OLD": "NEW"}`` or ``OLD=NEW,...``): after
  ``swiftmail relay reinject`` moved OLD's spool into NEW, resends meant
  for OLD go to NEW. ``timeout`` (30 s, the answer),
  ``connect_timeout`` (3 s), ``down_seconds`` (10 s a failed relay is
  tried last), ``max_request_bytes`` (8 MiB per request), ``ca_file``.
- ``handoff_wait`` (handoff): seconds a starting worker waits for the local
  relay to take its spool before refusing to start (30).
- ``host`` / ``port`` (127.0.0.1 / 2525), ``username``, ``password`` (an
  ``sm_live_`` API key), ``security``, ``timeout``: the ``smtp`` options.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg2
import urllib3
from swiftmail_plugins.smtp_transport import SmtpTransport

from swiftmail_core.errors import ConfigurationError, ServiceUnavailableError, SwiftMailError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage, Outcome, SendResult

MODES = ("network", "handoff", "smtp")
DEFAULT_MODE = "network"
CHECK = "relay transport can hand mail to a relay"
PINNED_CHECK = "resends wait for a listed or moved relay"


def _mode(options: dict[str, Any]) -> str:
    mode = str(options.get("mode", DEFAULT_MODE)).lower()
    if mode not in MODES:
        raise ConfigurationError(
            f"plugins.relay_transport.mode is {mode!r}: use network, handoff or smtp "
            "(SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE)")
    return mode


class RelayHandoffTransport:
    """Spool batches directly into the relay on this host."""

    name = "relay"

    def __init__(self, settings: Settings, wait_seconds: float = 30.0) -> None:
        self.settings = settings
        self.wait_seconds = wait_seconds

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Write the batch durably to the spool; accepted once on disk."""
        from swiftmail_relay.handoff import spool_messages

        try:
            queue_ids = spool_messages(self.settings, messages)
        except SwiftMailError as ex:
            return [SendResult(m.ledger_id, Outcome.DEFERRED, reason=f"relay spool: {ex}")
                    for m in messages]
        return [SendResult(m.ledger_id, Outcome.ACCEPTED, provider_message_id=queue_id)
                for m, queue_id in zip(messages, queue_ids, strict=True)]

    def preflight(self) -> None:
        """Wait up to ``handoff_wait`` for a local relay on the spool, else refuse."""
        from swiftmail_relay.config import RelayConfig
        from swiftmail_relay.spool_lock import deliverer_running

        spool = RelayConfig.from_settings(self.settings).spool_dir
        deadline = time.monotonic() + self.wait_seconds
        while not deliverer_running(spool):
            if time.monotonic() >= deadline:
                raise ConfigurationError(stranded_detail(spool))
            time.sleep(0.2)

    def close(self) -> None:
        """Nothing to release."""


def stranded_detail(spool: Any) -> str:
    """Return why a hand-off without a local relay is refused, and the fix."""
    return (f"plugins.relay_transport.mode is \"handoff\" but no `swiftmail relay run` delivers "
            f"from {spool} on this host: mail handed off here would wait in that spool. Start "
            "the relay on this host first, or set plugins.relay_transport.mode = \"network\" "
            "with plugins.relay_transport.relays listing the relays' intake addresses")


class RelayNetworkTransport:
    """Hand batches to relays' platform intakes over the network, with failover."""

    name = "relay"

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        from swiftmail_relay.intake_client import RelayPool, parse_moved, parse_relays
        from swiftmail_relay.platform_auth import platform_secrets

        self.settings = settings
        try:
            self.max_request_bytes = int(options.get("max_request_bytes", 8 * 1024 * 1024))
            timing = {key: float(options.get(key, default)) for key, default in (
                ("timeout", 30.0), ("connect_timeout", 3.0), ("down_seconds", 10.0))}
        except (TypeError, ValueError) as ex:
            raise ConfigurationError(f"plugins.relay_transport has a bad number: {ex}") from ex
        self.moved = parse_moved(options.get("moved_relays"))
        self.pool = RelayPool(parse_relays(options.get("relays", "127.0.0.1:2526")),
                              lambda: platform_secrets(settings),
                              ca_file=options.get("ca_file") or None, **timing)

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Sign and hand the batch over; one result per message.

        A message with ``resend_to`` (an earlier attempt's answer was lost
        there) goes to that relay only (or where ``moved_relays`` says its
        spool went); the relay drops it if it has it already. Raises
        ServiceUnavailableError when no relay took any of the others and no
        resend went out either (the worker counts the failure and pauses the
        campaign after several; a resend's row keeps its relay).
        """
        pinned: dict[str, list[OutboundMessage]] = {}
        fresh: list[OutboundMessage] = []
        for message in messages:
            if message.resend_to:
                target = self.moved.get(message.resend_to, message.resend_to)
                pinned.setdefault(target, []).append(message)
            else:
                fresh.append(message)
        results: list[SendResult] = []
        for url, group in pinned.items():
            results.extend(self._send_batch(group, only=url))
        if fresh:
            try:
                results.extend(self._send_batch(fresh))
            except Exception as ex:
                if all(result.outcome is Outcome.DEFERRED for result in results):
                    raise  # no relay took anything: a failed batch (pinned rows keep their relay)
                results.extend(SendResult(m.ledger_id, Outcome.DEFERRED,
                                          reason=f"relay hand-off failed: {ex}") for m in fresh)
        return results

    def _send_batch(self, messages: Sequence[OutboundMessage],
                    only: str | None = None) -> list[SendResult]:
        """Hand messages over in requests of at most ``max_request_bytes``.

        With ``only`` (a resend) every message gets an answer, never an
        exception: one the relay did not take is deferred, to it again.
        """
        from swiftmail_relay.config import RelayConfig
        from swiftmail_relay.handoff import prepare_message
        from swiftmail_relay.intake_wire import encoded_size

        config = RelayConfig.from_settings(self.settings)
        prepared = [(message, *prepare_message(self.settings, config, message))
                    for message in messages]
        chunks: list[list[Any]] = [[]]
        size = 0
        for item in prepared:
            cost = encoded_size(item[2])
            if chunks[-1] and size + cost > self.max_request_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += cost
        results: list[SendResult] = []
        for index, chunk in enumerate(chunks):
            try:
                done, failure = self._send_chunk(chunk, only)
            except Exception as ex:
                if not results and only is None:
                    raise
                # An earlier request was accepted: raising would make the worker send it
                # again. This one may have gone out (unknown); later ones did not (deferred).
                results.extend(SendResult(item[0].ledger_id, Outcome.UNKNOWN, resend_to=only,
                                          reason=f"relay hand-off failed: {ex}") for item in chunk)
                results.extend(SendResult(item[0].ledger_id, Outcome.DEFERRED, resend_to=only,
                                          reason=f"relay hand-off failed: {ex}")
                               for later in chunks[index + 1:] for item in later)
                break
            results.extend(done)
            if failure is not None:
                if not results and only is None:
                    raise ServiceUnavailableError(f"no relay took the batch: {failure}")
                rest = [item for later in chunks[index:] for item in later
                        if item[0].ledger_id not in {r.ledger_id for r in done}]
                results.extend(SendResult(item[0].ledger_id, Outcome.DEFERRED, reason=failure,
                                          resend_to=only) for item in rest)
                break
        return results

    def _send_chunk(self, chunk: list[Any],
                    only: str | None = None) -> tuple[list[SendResult], str | None]:
        """Post one request; return results and, if no relay kept it, why."""
        from swiftmail_relay.intake_wire import encode_batch

        answer = self.pool.post(encode_batch([(envelope, raw) for _, envelope, raw in chunk]),
                                only=only)
        if answer.kind == "accepted":
            ids = answer.queue_ids or (None,) * len(chunk)
            return [SendResult(item[0].ledger_id, Outcome.ACCEPTED, provider_message_id=queue_id)
                    for item, queue_id in zip(chunk, ids, strict=False)], None
        if answer.kind == "unknown":
            # The relay may have it: the worker resends there only (it drops repeats).
            return [SendResult(item[0].ledger_id, Outcome.UNKNOWN, reason=answer.reason,
                               resend_to=answer.relay) for item in chunk], None
        if answer.kind == "invalid":
            bad = _bad_message(answer.problem or {}, len(chunk))
            if bad is None:
                return [SendResult(item[0].ledger_id, Outcome.DEFERRED, reason=answer.reason,
                                   resend_to=only) for item in chunk], None
            rejected = SendResult(chunk[bad][0].ledger_id, Outcome.REJECTED, reason=answer.reason)
            rest = chunk[:bad] + chunk[bad + 1:]
            done, failure = self._send_chunk(rest, only) if rest else ([], None)
            return [rejected, *done], failure
        if answer.statuses and all(status == 413 for status in answer.statuses):
            if len(chunk) == 1:
                return [SendResult(chunk[0][0].ledger_id, Outcome.REJECTED,
                                   reason=f"larger than the relays accept: {answer.reason}")], None
            half = len(chunk) // 2
            first, failure = self._send_chunk(chunk[:half], only)
            if failure is not None:
                return first, failure
            second, failure = self._send_chunk(chunk[half:], only)
            return first + second, failure
        return [], answer.reason

    def preflight(self) -> None:
        """Check the platform secret can be had (the relays may start later)."""
        self.pool.secrets()

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.close()


def _bad_message(problem: dict[str, Any], count: int) -> int | None:
    """Return the index of the message a 422 names (``messages[3]....``), if any."""
    for error in problem.get("errors") or ():
        field = str(error.get("field", "")) if isinstance(error, dict) else ""
        if field.startswith("messages["):
            index = field[len("messages["):].partition("]")[0]
            if index.isdigit() and int(index) < count:
                return int(index)
    return None


def build(settings: Settings, options: dict[str, Any]) -> Any:
    """Return the relay transport the options ask for."""
    mode = _mode(options)
    if mode == "handoff":
        try:
            wait = float(options.get("handoff_wait", 30.0))
        except (TypeError, ValueError) as ex:
            raise ConfigurationError(f"plugins.relay_transport.handoff_wait: {ex}") from ex
        return RelayHandoffTransport(settings, wait)
    if mode == "smtp":
        return SmtpTransport({"host": "127.0.0.1", "port": 2525, **options}, name="relay")
    return RelayNetworkTransport(settings, options)


@hookimpl
def swiftmail_register_transports(settings: Settings) -> list[Any]:
    """Register the ``relay`` transport."""
    return [build(settings, settings.plugin_settings("relay_transport"))]


@hookimpl
def swiftmail_doctor_checks(settings: Settings) -> list[Any]:
    """Refuse a hand-off with no local relay; warn about unreachable network relays.

    In network mode, also warn about ledger rows waiting to be resent to a
    relay that is neither listed nor moved (``moved_relays``): no worker
    sends them anywhere, and they become ``unknown`` in the end.
    """
    from swiftmail_core.db.audit import Finding

    options = settings.plugin_settings("relay_transport")
    try:
        mode = _mode(options)
        if mode == "handoff":
            return [_handoff_finding(settings)]
        if mode == "network":
            return [_network_finding(options), _pinned_finding(settings, options)]
    except SwiftMailError as ex:
        return [Finding(False, CHECK, ex.detail)]
    return []


def _pinned_finding(settings: Settings, options: dict[str, Any]) -> Any:
    from swiftmail_relay.intake_client import parse_moved, parse_relays, relay_url

    from swiftmail_core.db.audit import Finding
    from swiftmail_core.db.targets import database_targets
    from swiftmail_core.sending.resend_targets import pinned_receivers

    known = {*parse_relays(options.get("relays", "127.0.0.1:2526")),
             *parse_moved(options.get("moved_relays"))}
    try:
        pinned = pinned_receivers(database_targets(settings))
    except (SwiftMailError, psycopg2.Error) as ex:
        return Finding(False, PINNED_CHECK, f"could not read the ledger: {ex}".strip(),
                       warning=True)

    def listed(receiver: str) -> bool:
        try:
            return relay_url(receiver) in known
        except SwiftMailError:
            return False

    stray = {receiver: counts for receiver, counts in sorted(pinned.items())
             if not listed(receiver)}
    if not stray:
        waiting = sum(sum(counts.values()) for counts in pinned.values())
        return Finding(True, PINNED_CHECK, f"{waiting} row(s) wait for a resend")
    described = "; ".join(
        f"{receiver}: " + ", ".join(f"{rows} {status}" for status, rows in sorted(counts.items()))
        for receiver, counts in stray.items())
    return Finding(False, PINNED_CHECK, (
        f"ledger rows wait to be resent to relays in neither plugins.relay_transport.relays "
        f"nor moved_relays ({described}); no worker sends them, and they become unknown "
        "after send_unknown_resend_hours. After `swiftmail relay reinject` moved a dead "
        "relay's spool, add moved_relays = {\"OLD\" = \"NEW\"} (docs/relay.md)"),
        warning=True)


def _handoff_finding(settings: Settings) -> Any:
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.spool_lock import deliverer_running

    from swiftmail_core.db.audit import Finding

    spool = RelayConfig.from_settings(settings).spool_dir
    if deliverer_running(spool):
        return Finding(True, CHECK, f"hand-off: a relay on this host delivers from {spool}")
    return Finding(False, CHECK, stranded_detail(spool))


def _network_finding(options: dict[str, Any]) -> Any:
    from swiftmail_relay.intake_client import parse_relays

    from swiftmail_core.db.audit import Finding

    relays = parse_relays(options.get("relays", "127.0.0.1:2526"))
    problems = [problem for url in relays
                if (problem := _probe(url, options.get("ca_file") or None)) is not None]
    if not problems:
        return Finding(True, CHECK, f"network: {len(relays)} relay(s) reachable")
    return Finding(False, CHECK, (
        f"network: {len(problems)} of {len(relays)} relay(s) not usable now "
        f"({'; '.join(problems)}); workers use the others, and mail waits (deferred) while "
        "none is up. Start `swiftmail relay run` there or fix plugins.relay_transport.relays"),
        warning=True)


def _probe(url: str, ca_file: str | None) -> str | None:
    """Return what keeps the relay intake at ``url`` from taking mail; None when it answers."""
    from swiftmail_relay.platform_intake import HEALTH_PATH

    pool = urllib3.PoolManager(**({"ca_certs": ca_file} if ca_file else {}))
    try:
        pool.request("GET", url + HEALTH_PATH, retries=False,
                     timeout=urllib3.Timeout(connect=2.0, read=5.0))
    except urllib3.exceptions.SSLError as ex:
        return (f"{url}: TLS handshake failed ({ex}): set ca_file for an untrusted "
                "certificate, or list an intake without TLS as http://")
    except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.NameResolutionError):
        return f"{url}: not reachable"
    except urllib3.exceptions.ProtocolError:
        # NOTE: a TLS intake drops a plain request unread; a worker would take that for
        # a lost answer and leave the rows 'unknown'.
        tls = url.replace("http://", "https://", 1)
        return (f"{url}: closed the connection without an HTTP answer (an intake with TLS? "
                f"list it as {tls})")
    except urllib3.exceptions.HTTPError as ex:
        return f"{url}: {ex}"
    finally:
        pool.clear()
    return None
