"""The smtp transport against a real SMTP sink on loopback."""

from __future__ import annotations

import uuid

import pytest
from swiftmail_plugins.smtp_transport import SmtpTransport, classify_reply

from swiftmail_core.testing.smtp_sink import SmtpSink
from swiftmail_core.transports import OutboundMessage, Outcome


def _message(ledger_id: int, recipient: str) -> OutboundMessage:
    raw = (f"From: a@sender.test\r\nTo: {recipient}\r\nSubject: hi {ledger_id}\r\n"
           f"Message-ID: <{ledger_id}@sender.test>\r\n\r\nbody\r\n").encode()
    return OutboundMessage(ledger_id, uuid.uuid4(), "bounces@sender.test", recipient, raw,
                           f"<{ledger_id}@sender.test>")


@pytest.fixture
def sink():  # type: ignore[no-untyped-def]
    with SmtpSink() as running:
        yield running


def test_sends_batch_on_one_connection_and_maps_replies(sink) -> None:  # type: ignore[no-untyped-def]
    sink.handler.rcpt_reply = lambda address: {
        "gone@x.test": "550 5.1.1 no such user",
        "later@x.test": "451 4.7.1 try later",
        "policy@x.test": "554 5.7.1 rejected by policy",
    }.get(address)
    transport = SmtpTransport({"host": "127.0.0.1", "port": sink.port})
    batch = [_message(1, "ok1@x.test"), _message(2, "gone@x.test"), _message(3, "later@x.test"),
             _message(4, "policy@x.test"), _message(5, "ok2@x.test")]
    results = {r.ledger_id: r for r in transport.send(batch)}
    transport.close()
    assert results[1].outcome is Outcome.ACCEPTED and results[5].outcome is Outcome.ACCEPTED
    assert (results[2].outcome, results[2].bounce_class) == (Outcome.REJECTED, "hard")
    assert results[3].outcome is Outcome.DEFERRED
    assert (results[4].outcome, results[4].bounce_class) == (Outcome.REJECTED, "policy")
    assert sink.handler.count() == 2


def test_reconnects_after_server_restart() -> None:
    with SmtpSink() as first:
        transport = SmtpTransport({"host": "127.0.0.1", "port": first.port})
        assert transport.send([_message(1, "a@x.test")])[0].outcome is Outcome.ACCEPTED
    result = transport.send([_message(2, "a@x.test")])[0]
    assert result.outcome is Outcome.DEFERRED  # nobody listens: deferred, not lost


def test_classify_reply() -> None:
    assert classify_reply(250, b"ok") == (Outcome.ACCEPTED, None)
    assert classify_reply(421, b"bye") == (Outcome.DEFERRED, None)
    assert classify_reply(552, b"5.2.2 mailbox full") == (Outcome.REJECTED, "mailbox_full")
    assert classify_reply(550, b"no such user") == (Outcome.REJECTED, "hard")


def test_a_connection_lost_after_data_is_never_retried() -> None:
    # Regression: a drop after the message body went out was retried on a new
    # connection, so the recipient could get the message twice.
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    bodies: list[bytes] = []

    def peer() -> None:
        for _ in range(2):
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection, connection.makefile("rb") as reader:
                connection.sendall(b"220 peer ready\r\n")
                for line in reader:
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        connection.sendall(b"250 peer\r\n")
                    elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                        connection.sendall(b"250 ok\r\n")
                    elif verb == b"DATA":
                        connection.sendall(b"354 go on\r\n")
                        body = b""
                        for data in reader:
                            body += data
                            if data == b".\r\n":
                                break
                        bodies.append(body)
                        break  # hang up before answering: the outcome is unknown
                    elif verb == b"QUIT":
                        connection.sendall(b"221 bye\r\n")
                        break

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    try:
        transport = SmtpTransport({"host": "127.0.0.1", "port": server.getsockname()[1],
                                   "timeout": 5})
        (result,) = transport.send([_message(1, "once@example.com")])
        assert result.outcome is Outcome.UNKNOWN
        assert len(bodies) == 1
    finally:
        server.close()
        thread.join(timeout=5)
