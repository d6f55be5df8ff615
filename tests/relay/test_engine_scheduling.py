"""The engine's scheduling: stop always ends, lost wake-ups are found, none are dropped."""

from __future__ import annotations

import asyncio
import uuid

from swiftmail_relay import metrics
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, new_id

MESSAGE = b"From: a@sender.example\r\nTo: x@y\r\nSubject: t\r\n\r\nhello\r\n"


def _domain(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"e{uuid.uuid4().hex[:10]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


def test_stop_ends_when_a_timer_change_meets_the_cancellation(relay_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Python 3.11's wait_for swallows a cancellation that lands as the event
    # it waits for is set: the timer loop then ran for ever and stop() hung.
    relay = relay_factory(2525)

    async def scenario() -> None:
        await relay.start()
        await asyncio.sleep(0.05)
        relay._schedule("nothing", "nowhere.example", relay.clock() + 3600)  # sets the event
        await asyncio.wait_for(relay.stop(), 10)

    asyncio.run(scenario())


def test_watchdog_reschedules_a_lost_wakeup(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=85)
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port, overdue_after=0.3)
    before = metrics.OVERDUE._value.get()

    async def scenario() -> None:
        await relay.start()
        try:
            envelope = Envelope(id=new_id(), mail_from="b@sender.example",
                                recipients=[Recipient(f"lost@{domain}")])
            relay.spool.write(envelope, MESSAGE)
            relay.spool.take_new()
            # Loaded but never scheduled: what a lost wake-up leaves behind.
            relay.envelopes[envelope.id] = relay.spool.read_envelope(envelope.id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not relay.finals and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert [r.status for e in relay.finals for r in e.recipients] == [DELIVERED]
    assert metrics.OVERDUE._value.get() - before == 1


def test_a_run_that_raises_counts_an_attempt_and_ends_expired(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=89)
    domain = _domain(dns_server, peer)
    # max_age leaves room for two tries on a loaded machine (1.5 s gave one at load 13-18).
    relay = relay_factory(peer.port, retry_base=0.05, retry_cap=0.1, max_age=5.0)

    async def broken_route(name: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug on every try")

    relay.resolver.route = broken_route

    async def scenario() -> None:
        await relay.start()
        try:
            relay.notify([relay.spool.write(Envelope(
                id=new_id(), mail_from="", recipients=[Recipient(f"x@{domain}")]), MESSAGE)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not relay.finals and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (recipient,) = [r for e in relay.finals for r in e.recipients]
    # Before, it retried silently at attempts 0 (no event) until it expired.
    assert recipient.status == "expired" and recipient.attempts >= 2


def test_a_row_the_relay_expired_is_spooled_again_when_resent(relay_factory) -> None:  # type: ignore[no-untyped-def]
    # Regression: the record of ledger rows taken outlived the relay's expiry by two
    # days, so a campaign's "resend to failed" within them was answered as a repeat of
    # the expired copy (accepted, never delivered).
    from swiftmail_relay.spool_ledger import write_once

    domain = "never.example"
    relay = relay_factory(2525, retry_base=0.05, retry_cap=0.1, max_age=1.0)

    async def broken_route(name: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("never reachable")

    relay.resolver.route = broken_route
    tenant = str(uuid.uuid4())

    def handoff() -> tuple[str, bool]:
        envelope = Envelope(id=new_id(), mail_from="b@sender.example", tenant_id=tenant,
                            recipients=[Recipient(f"x@{domain}", ledger_id=41)], source="intake")
        (answer,) = write_once(relay.spool, [(envelope, MESSAGE)])
        return answer

    async def scenario() -> None:
        await relay.start()
        try:
            queue_id, _ = handoff()
            relay.notify([queue_id])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not relay.finals and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (recipient,) = [r for e in relay.finals for r in e.recipients]
    assert recipient.status == "expired"
    queue_id, repeat = handoff()  # the row queued again by resend to failed
    assert repeat is False and queue_id in set(relay.spool.scan())


def test_a_row_spooled_without_its_record_is_recorded_before_delivery(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    # Regression: the record's crash gap (message renamed into queue/, process gone before
    # its link) was repaired only when the intake started, after the deliverer: a message
    # delivered and removed first was never recorded, and the worker's resend of its row
    # (its answer was lost in the crash) was spooled and delivered a second time.
    from swiftmail_relay.spool_ledger import write_once

    (peer,) = peers(1, first=97)
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port)
    tenant = str(uuid.uuid4())

    def envelope() -> Envelope:
        return Envelope(id=new_id(), mail_from="b@sender.example", tenant_id=tenant,
                        recipients=[Recipient(f"x@{domain}", ledger_id=43)], source="intake")

    relay.spool.write(envelope(), MESSAGE)  # spooled; the crash took its ledger record

    async def scenario() -> None:
        await relay.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not relay.finals and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert [r.status for e in relay.finals for r in e.recipients] == [DELIVERED]
    ((_, repeat),) = write_once(relay.spool, [(envelope(), MESSAGE)])  # the worker's resend
    assert repeat is True


def test_stop_lets_a_delivery_in_flight_record_its_outcome_and_leave_the_spool(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory) -> None:
    """Regression: stop() cancelled a worker between the receiver's 250 and the
    outcome's commit, leaving a delivered message spooled: the next relay
    delivered it again (seen as stale copies in bench/campaign_throughput)."""
    import threading

    from swiftmail_relay.sink import OutcomeSink

    (peer,) = peers(1, first=86)
    domain = _domain(dns_server, peer)
    recording, release, recorded = threading.Event(), threading.Event(), []

    def slow_record(outcomes) -> None:  # type: ignore[no-untyped-def]
        recording.set()
        release.wait(10)  # the database is slow: the outcome commits after stop() began
        recorded.extend(outcomes)

    relay = relay_factory(peer.port, sink=OutcomeSink(slow_record))

    async def scenario() -> None:
        await relay.start()
        envelope = Envelope(id=new_id(), mail_from="b@sender.example",
                            recipients=[Recipient(f"once@{domain}", ledger_id=7)],
                            tenant_id=str(uuid.uuid4()))
        relay.spool.write(envelope, MESSAGE)
        relay.notify(relay.spool.take_new())
        assert await asyncio.to_thread(recording.wait, 15), "never delivered"
        stopping = asyncio.create_task(relay.stop())
        await asyncio.sleep(0.3)
        release.set()
        await asyncio.wait_for(stopping, 20)

    asyncio.run(scenario())
    assert peer.recipients == [f"once@{domain}"]
    assert [o.type for o in recorded] == ["delivered"]
    assert list(relay.spool.scan()) == [], "a delivered message was left for the next relay"


def test_the_relay_empties_free_files_at_start_and_at_its_full_scan(  # type: ignore[no-untyped-def]
        relay_factory, monkeypatch) -> None:
    # Finished messages' files kept for reuse (free/) hold delivered mail: a
    # starting relay empties them all, a running one those unused for a minute.
    import swiftmail_relay.spool as spool_module

    relay = relay_factory(2525)
    spool = relay.spool

    def finish_two() -> None:
        batch = [(Envelope(id=new_id(), mail_from="a@sender.example",
                           recipients=[Recipient(f"r{i}@y.example")]), MESSAGE) for i in range(2)]
        for queue_id in spool.write_many(batch):
            spool.remove(queue_id)

    def sizes() -> list[int]:
        return sorted(path.stat().st_size for path in spool.free.iterdir())

    finish_two()
    assert sizes() and 0 not in sizes()

    async def scenario() -> None:
        await relay.start()
        try:
            assert set(sizes()) == {0}
            monkeypatch.setattr(spool_module, "FREE_SCRUB_SECONDS", 0.0)
            finish_two()
            assert 0 < max(sizes())
            await relay.scan_once(full=True)
            assert set(sizes()) == {0}
        finally:
            await relay.stop()

    asyncio.run(scenario())
