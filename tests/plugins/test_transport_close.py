"""Transports are closed at worker shutdown; the smtp transport closes every thread's connection."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from swiftmail_plugins.sending_commands import run_until_stopped
from swiftmail_plugins.smtp_transport import SmtpTransport

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.testing.smtp_sink import SmtpSink
from swiftmail_core.transports import OutboundMessage, Outcome


def _message(ledger_id: int) -> OutboundMessage:
    raw = (f"From: a@sender.test\r\nTo: r@x.test\r\nSubject: {ledger_id}\r\n"
           f"Message-ID: <{ledger_id}@sender.test>\r\n\r\nbody\r\n").encode()
    return OutboundMessage(ledger_id, uuid.uuid4(), "bounces@sender.test", "r@x.test", raw,
                           f"<{ledger_id}@sender.test>")


def _until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_close_quits_every_threads_connection() -> None:
    quits: list[str] = []
    with SmtpSink() as sink:
        async def handle_quit(server, session, envelope):  # type: ignore[no-untyped-def]
            quits.append(str(session.peer))
            return "221 Bye"

        sink.handler.handle_QUIT = handle_quit
        transport = SmtpTransport({"host": "127.0.0.1", "port": sink.port})
        results = []
        # All three alive at once: a thread started after another ended may get
        # its id, and with it (rightly) its connection.
        all_started = threading.Barrier(3)

        def send(n: int) -> None:
            all_started.wait(30)
            results.extend(transport.send([_message(n)]))
            all_started.wait(30)  # none ends before every one has sent

        threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
        transport.close()  # from another thread than any that sent
        _until(lambda: len(quits) >= 3)  # the sink handles QUIT on its own loop
        assert len(quits) == 3  # before, only the calling thread's (none) was closed
        # A later send opens a fresh connection.
        assert transport.send([_message(9)])[0].outcome is Outcome.ACCEPTED
        transport.close()
        _until(lambda: len(quits) >= 4)
    assert len(quits) == 4


class _Recorder:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.closed = 0

    def send(self, messages):  # type: ignore[no-untyped-def]
        return []

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise OSError("cannot close")


class _Plugin:
    def __init__(self, transports: list[_Recorder]) -> None:
        self.transports = transports

    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return self.transports


def test_worker_shutdown_closes_every_transport_through_the_manager(settings) -> None:  # type: ignore[no-untyped-def]
    failing, quiet = _Recorder("t-failing", fail=True), _Recorder("t-quiet")
    manager = PluginManager(settings)
    manager.register(_Plugin([failing, quiet]), "close-test")
    manager.transports()

    class Consumer:
        def run(self) -> None:
            raise KeyboardInterrupt  # however the consumer ends

    with pytest.raises(KeyboardInterrupt):
        run_until_stopped(Consumer(), manager)
    assert (failing.closed, quiet.closed) == (1, 1)  # one failing close stops no other
    manager.close_transports()  # nothing built since: nothing closed twice
    assert (failing.closed, quiet.closed) == (1, 1)
