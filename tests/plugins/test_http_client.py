"""The transports' HTTP client never sends a POST twice because of its own retries."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from swiftmail_plugins.sendgrid import SendGridTransport

from swiftmail_core.sending.http_client import KeepAliveClient, OutcomeUnknown, RequestNotSent
from swiftmail_core.transports import OutboundMessage, Outcome


class _Peer:
    """A loopback HTTP peer that reads each request, then misbehaves as told."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                self.requests += 1
                if self.behaviour == "reset":
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
                elif self.behaviour == "silent":
                    self.stop.wait(5)

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.mark.parametrize("behaviour", ["reset", "silent"])
def test_a_post_that_went_out_is_never_retried(behaviour: str) -> None:
    # Regression: any OSError retried the POST, which could resend a batch of 1,000.
    peer = _Peer(behaviour)
    try:
        client = KeepAliveClient(f"http://127.0.0.1:{peer.port}", timeout=1.0)
        with pytest.raises(OutcomeUnknown):
            client.post("/send", b"{}", {"Content-Type": "application/json"})
        assert peer.requests == 1
    finally:
        peer.close()


def test_no_connection_is_a_request_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(RequestNotSent):
        KeepAliveClient(f"http://127.0.0.1:{port}", timeout=1.0).post("/send", b"{}", {})


def test_a_lost_answer_makes_the_messages_unknown_not_deferred() -> None:
    peer = _Peer("reset")
    try:
        transport = SendGridTransport({"api_key": "SG.test", "timeout": 1,
                                       "base_url": f"http://127.0.0.1:{peer.port}"})
        message = OutboundMessage(
            ledger_id=7, tenant_id=uuid.uuid4(), envelope_from="b@sender.test",
            recipient="r@example.com", message_id="<m@sender.test>",
            raw=b"From: a@sender.test\r\nTo: r@example.com\r\nSubject: s\r\n"
                b"Content-Type: text/plain\r\n\r\nbody\r\n")
        (result,) = transport.send([message])
        assert result.outcome is Outcome.UNKNOWN and peer.requests == 1
    finally:
        peer.close()
