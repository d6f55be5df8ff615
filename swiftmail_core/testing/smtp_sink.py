"""A counting SMTP sink on loopback (aiosmtpd) with scriptable failures, and its fixture."""

from __future__ import annotations

import collections
import email
import email.policy
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CountingHandler:
    """Record every accepted message; ``rcpt_reply`` may refuse recipients."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self.per_recipient: collections.Counter[str] = collections.Counter()
        self.rcpt_reply: Callable[[str], str | None] = lambda address: None
        self.data_reply: Callable[[bytes], str | None] = lambda data: None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.data_reply(envelope.content)
        if reply:
            return reply
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.received.append((recipient, envelope.content))
                self.per_recipient[recipient.lower()] += 1
        return "250 2.0.0 queued"

    def messages(self) -> list[email.message.Message]:
        """Return the received messages parsed."""
        with self.lock:
            return [email.message_from_bytes(raw, policy=email.policy.default)
                    for _, raw in self.received]

    def count(self) -> int:
        """Return how many messages were accepted."""
        with self.lock:
            return len(self.received)


class SmtpSink:
    """An aiosmtpd controller on a free loopback port."""

    def __init__(self) -> None:
        self.handler = CountingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running counting SMTP sink on loopback (``smtp_sink.port``, ``.handler``)."""
    with SmtpSink() as running:
        yield running
