"""The ``relay`` transport: campaign mail into SwiftMail's own relay.

Settings (``[plugins.relay_transport]`` / ``SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_*``):

- ``mode``: ``handoff`` (default) writes each batch straight into the
  relay's durable spool on this host (``swiftmail_relay.handoff``: DKIM
  signed here, fsync'd, one directory sync per batch), as durable as an
  SMTP 250 and without the ~500 messages/s ceiling of an SMTP listener;
  ``smtp`` submits over SMTP to the relay's submission listener instead,
  for a relay on another host.
- ``host`` / ``port`` (127.0.0.1 / 2525), ``username``, ``password`` (an
  ``sm_live_`` API key of the sending tenant), ``security`` and ``timeout``:
  the SMTP submission options, with connections reused per worker thread.
  NOTE: one credential authenticates one tenant, so ``smtp`` mode suits a
  relay serving that tenant; multi-tenant hosts use ``handoff``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swiftmail_plugins.smtp_transport import SmtpTransport

from swiftmail_core.errors import ConfigurationError, SwiftMailError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage, Outcome, SendResult


class RelayHandoffTransport:
    """Spool batches directly into the local relay."""

    name = "relay"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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

    def close(self) -> None:
        """Nothing to release."""


def build(settings: Settings, options: dict[str, Any]) -> Any:
    """Return the relay transport the options ask for."""
    mode = str(options.get("mode", "handoff")).lower()
    if mode == "handoff":
        return RelayHandoffTransport(settings)
    if mode == "smtp":
        return SmtpTransport({"host": "127.0.0.1", "port": 2525, **options}, name="relay")
    raise ConfigurationError(
        f"plugins.relay_transport.mode is {mode!r}: use handoff or smtp "
        "(SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE)")


@hookimpl
def swiftmail_register_transports(settings: Settings) -> list[Any]:
    """Register the ``relay`` transport."""
    return [build(settings, settings.plugin_settings("relay_transport"))]


@hookimpl
def swiftmail_doctor_checks(settings: Settings) -> list[Any]:
    """Warn when hand-off would leave mail in a spool no relay on this host delivers."""
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.spool_lock import deliverer_running

    from swiftmail_core.db.audit import Finding

    options = settings.plugin_settings("relay_transport")
    if str(options.get("mode", "handoff")).lower() != "handoff":
        return []
    try:
        spool = RelayConfig.from_settings(settings).spool_dir
    except SwiftMailError as ex:
        return [Finding(False, "relay hand-off has a local relay", ex.detail)]
    running = deliverer_running(spool)
    return [Finding(running, "relay hand-off has a local relay",
                    f"a relay delivers from {spool}" if running else
                    f"no `swiftmail relay run` delivers from {spool} on this host: mail the "
                    "relay transport hands off here would wait in that spool. Start the relay "
                    "on this host, or set plugins.relay_transport.mode = \"smtp\" to submit to a "
                    "relay on another host", warning=True)]


@hookimpl
def swiftmail_secret_settings() -> dict[str, list[str]]:
    """Declare the submission password secret (smtp mode)."""
    return {"relay_transport": ["password"]}
