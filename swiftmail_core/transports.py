"""What a sending transport receives and what it answers.

A transport plugin (see ``swiftmail_register_transports``) sends a batch of
rendered messages and reports, per message, accepted, deferred (with when to
retry) or rejected (with why). Core never names a provider. A transport may
also define ``preflight()``: ``swiftmail worker`` calls it at start-up and
refuses to start when it raises (a configuration that would strand mail).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one recipient, tied to its ledger row."""

    ledger_id: int
    tenant_id: uuid.UUID
    envelope_from: str
    recipient: str
    raw: bytes
    message_id: str
    campaign_id: uuid.UUID | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Where an earlier attempt went whose answer was lost (``SendResult.resend_to``):
    #: the transport must send it there and nowhere else.
    resend_to: str | None = None
    #: ``raw``'s line breaks are all CRLF, with no bare CR or LF (the renderer's own
    #: output, ``RenderedMessage.crlf``): the relay transport then does not check them.
    crlf: bool = False


class Outcome(enum.Enum):
    """How a transport disposed of a message."""

    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    #: The request went out and its answer was lost (a read timeout): the message
    #: may have been accepted, so it is never resent elsewhere; the provider's events
    #: tell, or, with ``SendResult.resend_to``, a resend to that same receiver does.
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class SendResult:
    """A transport's answer for one message of a batch."""

    ledger_id: int
    outcome: Outcome
    provider_message_id: str | None = None
    retry_after: datetime.timedelta | None = None
    reason: str = ""
    bounce_class: str | None = None
    #: Set by a transport whose receiver drops a ledger row it already took (so a
    #: resend there is harmless): the receiver this message may be at. The worker
    #: then resends it there only (``OutboundMessage.resend_to``), for a while.
    resend_to: str | None = None


@runtime_checkable
class Transport(Protocol):
    """A named way of sending mail (relay, SMTP smarthost, an HTTP API)."""

    name: str

    def send(self, messages: Sequence[OutboundMessage]) -> Sequence[SendResult]:
        """Send a batch; return one result per message, in any order."""
        ...

    def close(self) -> None:
        """Release connections and sessions."""
        ...


def preflight(transports: Iterable[Any]) -> None:
    """Call each transport's optional ``preflight()``; its error stops the worker."""
    for transport in transports:
        check = getattr(transport, "preflight", None)
        if callable(check):
            check()
