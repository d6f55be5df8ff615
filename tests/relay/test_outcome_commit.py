"""A delivered message leaves the spool after its outcome commits, without holding a worker."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from swiftmail_relay.spool import Envelope, Recipient, new_id

MESSAGE = b"From: a@sender.example\r\nTo: x@y\r\nSubject: t\r\n\r\nhello\r\n"


def _domain(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"c{uuid.uuid4().hex[:10]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


def _spool(relay, domain: str, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    tenant = str(uuid.uuid4())
    return relay.spool.write_many([
        (Envelope(id=new_id(), mail_from="b@sender.example",
                  recipients=[Recipient(f"r{i}@{domain}", ledger_id=100 + i)], tenant_id=tenant),
         MESSAGE) for i in range(count)])


class _SlowDatabase:
    """An outcome writer that commits only when released.

    With ``down_for``, a write not released within that many seconds fails
    as a database that is still down would.
    """

    def __init__(self, down_for: float | None = None) -> None:
        self.release = threading.Event()
        self.down_for = down_for
        self.writes: list[list[str]] = []

    def record(self, outcomes) -> None:  # type: ignore[no-untyped-def]
        released = self.release.wait(20 if self.down_for is None else self.down_for)
        if not released and self.down_for is not None:
            raise ConnectionError("the database is still down")
        self.writes.append([o.email for o in outcomes])


@pytest.mark.parametrize("limit", [None, 0])
def test_a_worker_goes_on_while_its_outcome_commits(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory, monkeypatch, limit) -> None:
    """One delivery worker delivers every message while the first outcome write is
    still uncommitted; each message stays spooled until its outcome is committed.
    With ``COMMITTING_LIMIT`` 0 the worker waits for each commit (back-pressure)."""
    import swiftmail_relay.engine as engine_module
    from swiftmail_relay.sink import OutcomeSink

    if limit is not None:
        monkeypatch.setattr(engine_module, "COMMITTING_LIMIT", limit)
    (peer,) = peers(1, first=98)
    domain = _domain(dns_server, peer)
    database = _SlowDatabase()
    relay = relay_factory(peer.port, workers=1, sink=OutcomeSink(database.record, linger=0.01))

    async def scenario() -> None:
        await relay.start()
        try:
            queue_ids = _spool(relay, domain, 3)
            relay.notify(relay.spool.take_new())
            for _ in range(300):
                if len(peer.recipients) == 3 or (limit == 0 and peer.recipients):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            if limit == 0:
                assert len(peer.recipients) == 1, "the worker did not wait for the commit"
            else:
                assert len(peer.recipients) == 3, "the worker waited for the commit"
            assert sorted(relay.spool.scan()) == sorted(queue_ids), \
                "a message left the spool before its outcome was committed"
            assert relay.finals == []
            database.release.set()
            await relay.idle(timeout=15)
            assert list(relay.spool.scan()) == []
        finally:
            database.release.set()
            await relay.stop()

    asyncio.run(scenario())
    assert sorted(peer.recipients) == [f"r{i}@{domain}" for i in range(3)]
    assert sorted(e for write in database.writes for e in write) == sorted(peer.recipients)
    assert len(relay.finals) == 3


def test_stop_writes_the_last_outcomes_then_empties_the_spool(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """Stopping while outcomes wait for their write: the write finishes, then every
    delivered message leaves the spool before the spool's lock is released."""
    from swiftmail_relay.sink import OutcomeSink

    (peer,) = peers(1, first=99)
    domain = _domain(dns_server, peer)
    database = _SlowDatabase()
    relay = relay_factory(peer.port, workers=2, sink=OutcomeSink(database.record, linger=0.01))

    async def scenario() -> None:
        await relay.start()
        _spool(relay, domain, 4)
        relay.notify(relay.spool.take_new())
        for _ in range(300):
            if len(peer.recipients) == 4:
                break
            await asyncio.sleep(0.02)
        stopping = asyncio.create_task(relay.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()
        database.release.set()
        await asyncio.wait_for(stopping, 20)

    asyncio.run(scenario())
    assert len(peer.recipients) == 4
    assert sorted(e for write in database.writes for e in write) == sorted(peer.recipients)
    assert list(relay.spool.scan()) == []
    assert len(relay.finals) == 4


def test_a_stop_with_the_outcomes_unwritten_leaves_the_messages_spooled(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """The database stays down past the sink's stop timeout: the delivered messages
    stay in the spool (the next relay records them), none is reported final."""
    from swiftmail_relay.sink import OutcomeSink

    (peer,) = peers(1, first=100)
    domain = _domain(dns_server, peer)
    database = _SlowDatabase(down_for=2.0)  # longer than the stop's 0.3 s below
    sink = OutcomeSink(database.record, linger=0.01)
    relay = relay_factory(peer.port, workers=2, sink=sink)

    async def scenario() -> list[str]:
        await relay.start()
        queue_ids = _spool(relay, domain, 2)
        relay.notify(relay.spool.take_new())
        for _ in range(300):
            if len(peer.recipients) == 2:
                break
            await asyncio.sleep(0.02)
        original = sink.stop

        async def impatient_stop(timeout: float = 30.0) -> None:
            await original(timeout=0.3)

        sink.stop = impatient_stop  # type: ignore[method-assign]
        await asyncio.wait_for(relay.stop(), 20)
        return queue_ids

    queue_ids = asyncio.run(scenario())
    assert len(peer.recipients) == 2
    assert database.writes == []
    assert sorted(relay.spool.scan()) == sorted(queue_ids)
    assert relay.finals == []


def test_the_sink_gathers_outcomes_that_arrive_while_it_lingers() -> None:
    from swiftmail_relay.outcomes import Outcome
    from swiftmail_relay.sink import OutcomeSink

    writes: list[int] = []
    sink = OutcomeSink(lambda outcomes: writes.append(len(outcomes)), linger=0.2)

    async def scenario() -> None:
        sink.start()
        futures = []
        for index in range(5):
            futures.append(sink.add([Outcome(tenant_id=uuid.uuid4(), type="delivered",
                                             email=f"r{index}@x.example",
                                             source_key=f"k{index}")]))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        await sink.stop()

    asyncio.run(scenario())
    assert writes == [5]
