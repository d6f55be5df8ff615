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


def test_a_recipient_is_not_saved_as_final_before_its_outcome_commits(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """A message to two domains: one recipient delivered, the other deferred, while the
    database is down. The relay stops before the delivered outcome commits (a crash
    would too): the spool must not say that recipient is done, or no relay would ever
    record its outcome. The next relay delivers it again (the duplicate a crash between
    the receiver's 250 and our write allows) and records both recipients."""
    from swiftmail_relay.sink import OutcomeSink

    ok_peer, later_peer = peers(2, first=102)
    ok_domain, later_domain = _domain(dns_server, ok_peer), _domain(dns_server, later_peer)
    asked: list[str] = []
    deferring = threading.Event()
    deferring.set()

    def later_rcpt(address: str) -> str:
        asked.append(address)
        return "451 4.7.1 try again later" if deferring.is_set() else "250 2.1.5 ok"

    later_peer.rcpt = later_rcpt
    down = _SlowDatabase(down_for=2.0)  # longer than the stop's 0.3 s below
    first = relay_factory(ok_peer.port, workers=2, sink=OutcomeSink(down.record, linger=0.01))
    envelope = Envelope(id=new_id(), mail_from="b@sender.example", tenant_id=str(uuid.uuid4()),
                        recipients=[Recipient(f"a@{ok_domain}", ledger_id=201),
                                    Recipient(f"b@{later_domain}", ledger_id=202)])
    state = first.spool.queue / f"{envelope.id}.state"

    async def until_stopped() -> None:
        await first.start()
        first.notify([first.spool.write(envelope, MESSAGE)])
        for _ in range(300):
            if ok_peer.recipients and asked and state.exists():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # both domains' progress saved
        original = first.sink.stop

        async def impatient_stop(timeout: float = 30.0) -> None:
            await original(timeout=0.3)

        first.sink.stop = impatient_stop  # type: ignore[method-assign]
        await asyncio.wait_for(first.stop(), 20)

    asyncio.run(until_stopped())
    assert ok_peer.recipients == [f"a@{ok_domain}"] and set(asked) == {f"b@{later_domain}"}
    assert down.writes == []

    deferring.clear()
    recorded: list[tuple[str, str]] = []
    second = relay_factory(ok_peer.port, workers=2, sink=OutcomeSink(
        lambda outcomes: recorded.extend((o.email, o.type) for o in outcomes), linger=0.01))

    async def until_idle() -> None:
        await second.start()
        try:
            for _ in range(500):
                if second.finals:
                    break
                await asyncio.sleep(0.02)
        finally:
            await second.stop()

    asyncio.run(until_idle())
    assert (f"a@{ok_domain}", "delivered") in recorded, recorded
    assert (f"b@{later_domain}", "delivered") in recorded, recorded
    assert [e.id for e in second.finals] == [envelope.id]
    assert list(second.spool.scan()) == []


def test_once_committed_a_recipient_is_saved_as_final(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """After its outcome commits, the saved progress says the recipient is done: a
    later crash must not deliver it again (the other recipient still waits)."""
    from swiftmail_relay.sink import OutcomeSink
    from swiftmail_relay.spool import DELIVERED, PENDING

    ok_peer, later_peer = peers(2, first=104)
    ok_domain, later_domain = _domain(dns_server, ok_peer), _domain(dns_server, later_peer)
    later_peer.rcpt = lambda address: "451 4.7.1 try again later"
    database = _SlowDatabase()
    relay = relay_factory(ok_peer.port, workers=2, retry_base=30, retry_cap=60,
                          sink=OutcomeSink(database.record, linger=0.01))
    envelope = Envelope(id=new_id(), mail_from="b@sender.example", tenant_id=str(uuid.uuid4()),
                        recipients=[Recipient(f"a@{ok_domain}", ledger_id=301),
                                    Recipient(f"b@{later_domain}", ledger_id=302)])

    def saved() -> dict[str, str]:
        try:
            stored = relay.spool.read_envelope(envelope.id)
        except FileNotFoundError:
            return {}
        return {r.address.partition("@")[0]: r.status for r in stored.recipients}

    async def scenario() -> tuple[dict[str, str], dict[str, str]]:
        await relay.start()
        try:
            relay.notify([relay.spool.write(envelope, MESSAGE)])
            for _ in range(300):
                if ok_peer.recipients and relay.envelopes[envelope.id].recipients[1].attempts:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # both domains' progress saved
            before = saved()
            database.release.set()
            for _ in range(300):
                if saved().get("a") == DELIVERED:
                    break
                await asyncio.sleep(0.02)
            return before, saved()
        finally:
            database.release.set()
            await relay.stop()

    before, after = asyncio.run(scenario())
    assert before == {"a": PENDING, "b": PENDING}, "saved as final before its commit"
    assert after == {"a": DELIVERED, "b": PENDING}
    assert sorted(e for write in database.writes for e in write) == [
        f"a@{ok_domain}", f"b@{later_domain}"]


def test_a_state_write_that_lands_after_the_message_left_leaves_nothing(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """One domain's progress is still being written when the other domain finishes the
    message and it leaves the spool: the late state file must not stay behind."""
    import time

    from swiftmail_relay.sink import OutcomeSink

    first_peer, second_peer = peers(2, first=106)
    domains = [_domain(dns_server, first_peer), _domain(dns_server, second_peer)]
    relay = relay_factory(first_peer.port, workers=2,
                          sink=OutcomeSink(lambda outcomes: None, linger=0.01))
    save_state = relay.spool.save_state

    def slow_save_state(envelope, data=None) -> None:  # type: ignore[no-untyped-def]
        time.sleep(0.5)  # the other domain's delivery finishes the message meanwhile
        save_state(envelope, data)

    relay.spool.save_state = slow_save_state  # type: ignore[method-assign]
    envelope = Envelope(id=new_id(), mail_from="b@sender.example", tenant_id=str(uuid.uuid4()),
                        recipients=[Recipient(f"r{i}@{d}", ledger_id=400 + i)
                                    for i, d in enumerate(domains)])

    async def scenario() -> None:
        await relay.start()
        try:
            relay.notify([relay.spool.write(envelope, MESSAGE)])
            for _ in range(300):
                if relay.finals:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # the slow write lands
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert [e.id for e in relay.finals] == [envelope.id]
    assert sorted(p.name for p in relay.spool.queue.iterdir()) == []
