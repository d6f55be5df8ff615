"""The engine reads envelopes and control files in worker threads, never on its loop."""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading

from swiftmail_relay.spool import Envelope, Recipient, new_id


def _blocking(order: list[str], release: threading.Event, call):  # type: ignore[no-untyped-def]
    def blocked(*args, **kwargs):  # type: ignore[no-untyped-def]
        order.append("read started")
        release.wait(10)
        order.append("read done")
        return call(*args, **kwargs)

    return blocked


async def _prove_the_loop_runs(order: list[str], release: threading.Event) -> None:
    for _ in range(1000):
        if order:
            break
        await asyncio.sleep(0.01)
    order.append("loop ran")
    release.set()


def _spool_one(relay) -> str:  # type: ignore[no-untyped-def]
    envelope = Envelope(id=new_id(), mail_from="app@x.example",
                        recipients=[Recipient("user@nowhere.example", next_attempt_at=1e12)])
    return relay.spool.write(envelope, b"From: app@x.example\r\n\r\nbody\r\n")


def test_notify_and_scans_read_envelopes_off_the_loop(relay_factory) -> None:  # type: ignore[no-untyped-def]
    # Regression: notify() and the scan read every envelope on the event loop.
    relay = relay_factory(1)
    announced, handed = _spool_one(relay), _spool_one(relay)
    read = relay.spool.read_envelope
    runs: list[list[str]] = []

    async def scenario() -> None:
        for load in (lambda ids: relay.notify(ids), lambda ids: relay.scan_once(full=True)):
            order: list[str] = []
            release = threading.Event()
            relay.spool.read_envelope = _blocking(order, release, read)
            queue_id = handed if not runs else announced
            relay.envelopes.pop(queue_id, None)
            pending = load([queue_id])
            await asyncio.gather(_prove_the_loop_runs(order, release),
                                 *([pending] if asyncio.iscoroutine(pending) else []))
            for _ in range(1000):
                if queue_id in relay.envelopes:
                    break
                await asyncio.sleep(0.01)
            assert queue_id in relay.envelopes
            runs.append(order)

    asyncio.run(scenario())
    for order in runs:
        assert order[:3] == ["read started", "loop ran", "read done"]


def test_control_files_are_read_off_the_loop(relay_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: the scan read and removed the CLI's control files on the event loop.
    relay = relay_factory(1)
    queue_id = _spool_one(relay)
    (relay.spool.control / "retry.json").write_text(json.dumps({"action": "retry"}))
    order: list[str] = []
    release = threading.Event()
    real = pathlib.Path.read_bytes

    def read_bytes(path: pathlib.Path) -> bytes:
        if path.parent == relay.spool.control:
            return _blocking(order, release, real)(path)
        return real(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)

    async def scenario() -> None:
        relay._load(queue_id)
        await asyncio.gather(relay.scan_once(full=False), _prove_the_loop_runs(order, release))

    asyncio.run(scenario())
    assert order == ["read started", "loop ran", "read done"]
    (recipient,) = relay.envelopes[queue_id].recipients
    assert recipient.next_attempt_at == 0.0  # the retry command was applied
    assert not list(relay.spool.control.glob("*.json"))


def test_finished_ids_are_forgotten_oldest_first(relay_factory) -> None:  # type: ignore[no-untyped-def]
    """A scan forgets ids finished over a minute ago and keeps the newer ones."""
    relay = relay_factory(1)
    relay._finished.update({"old1": 1.0, "old2": 2.0, "new1": 100.0, "new2": 101.0})
    relay._forget_finished(50.0)
    assert list(relay._finished) == ["new1", "new2"]
    relay._forget_finished(1000.0)
    assert relay._finished == {}
