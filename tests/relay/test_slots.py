"""Connection slots come back on every path; SMTPUTF8 and 8BITMIME are passed on or bounced."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from swiftmail_relay.shaping import RedisShaper
from swiftmail_relay.spool import BOUNCED, DELIVERED, Envelope, Recipient, new_id

MESSAGE = b"From: a@sender.example\r\nTo: x@y\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture
def shaper(redis_url, run_id):  # type: ignore[no-untyped-def]
    """Factory: a RedisShaper on the test Redis under a unique key prefix."""
    prefix = f"{run_id}:slots:{uuid.uuid4().hex[:6]}"

    def factory(config):  # type: ignore[no-untyped-def]
        import redis.asyncio

        return RedisShaper(dataclasses.replace(config, redis_prefix=prefix),
                           redis.asyncio.Redis.from_url(redis_url))

    return factory


def _domain(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"u{uuid.uuid4().hex[:10]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


def _envelope(address: str, **fields) -> Envelope:  # type: ignore[no-untyped-def]
    return Envelope(id=new_id(), mail_from="b@sender.example", recipients=[Recipient(address)],
                    **fields)


def _deliver(relay, items, until: int, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    """Spool (envelope, raw) items in order, run until ``until`` are final; return slots seen."""
    seen: dict = {}

    async def scenario() -> None:
        await relay.start()
        try:
            for envelope, raw in items:
                relay.notify([relay.spool.write(envelope, raw)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(relay.finals) < until and loop.time() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # background slot releases
            # Slots still taken by connections not idle in the pool: leaked.
            idle = sum(len(c) for c in relay.deliverer._idle.values())
            seen["open"] = sum(relay.deliverer._open.values()) - idle
            throttle = relay.throttle
            if isinstance(throttle, RedisShaper):
                keys = [k async for k in throttle.redis.scan_iter(f"{throttle.prefix}:conn:*")]
                seen["leases"] = sum([await throttle.redis.zcard(k) for k in keys]) - idle
        finally:
            await relay.stop()

    asyncio.run(scenario())
    return seen


def test_utf8_recipient_to_a_peer_without_smtputf8_bounces_and_frees_the_slot(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, shaper
) -> None:
    (peer,) = peers(1, first=70)
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port, throttle=shaper, warmup=False, max_connections_per_site=1,
                          policies={"default": {"max_connections": 1}})
    items = [(_envelope(f"jürgen{n}@{domain}", smtputf8=True), MESSAGE) for n in range(3)]
    items.append((_envelope(f"plain@{domain}"), MESSAGE))
    seen = _deliver(relay, items, until=4)
    statuses = {e.recipients[0].address: e.recipients[0] for e in relay.finals}
    assert statuses[f"plain@{domain}"].status == DELIVERED, statuses
    for number in range(3):
        recipient = statuses[f"jürgen{number}@{domain}"]
        assert recipient.status == BOUNCED
        assert recipient.last_reply.startswith("553 5.6.7") and "SMTPUTF8" in recipient.last_reply
    assert seen == {"open": 0, "leases": 0}


def test_smtputf8_and_8bitmime_are_passed_on(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=71)
    peer.extensions = ["8BITMIME", "SMTPUTF8", "PIPELINING"]
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port)
    body = "From: a@sender.example\r\nSubject: grüße\r\n\r\nhallo wält\r\n".encode()
    items = [(_envelope(f"jürgen@{domain}", smtputf8=True, body_type="8BITMIME"), body),
             (_envelope(f"plain@{domain}"), MESSAGE)]
    _deliver(relay, items, until=2)
    assert sorted(r.status for e in relay.finals for r in e.recipients) == [DELIVERED] * 2
    assert sorted(peer.recipients) == sorted([f"jürgen@{domain}", f"plain@{domain}"])
    utf8, plain = sorted(peer.mail_commands, key=len, reverse=True)
    assert "SMTPUTF8" in utf8 and "BODY=8BITMIME" in utf8
    assert "SMTPUTF8" not in plain and "BODY" not in plain


def test_8bit_message_to_a_peer_without_8bitmime_bounces(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=72)
    peer.extensions = ["SIZE 1000000"]
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port, max_connections_per_site=1)
    body = "From: a@sender.example\r\nSubject: s\r\n\r\nhallo wält\r\n".encode()
    items = [(_envelope(f"a@{domain}", body_type="8BITMIME"), body),
             (_envelope(f"b@{domain}"), MESSAGE)]
    seen = _deliver(relay, items, until=2)
    replies = {e.recipients[0].address: e.recipients[0] for e in relay.finals}
    assert replies[f"a@{domain}"].status == BOUNCED
    assert replies[f"a@{domain}"].last_reply.startswith("554 5.6.3")
    assert replies[f"b@{domain}"].status == DELIVERED
    assert seen["open"] == 0


def test_unexpected_error_in_a_transaction_frees_the_slot(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, shaper, monkeypatch
) -> None:
    from swiftmail_relay import delivery

    (peer,) = peers(1, first=73)
    domain = _domain(dns_server, peer)
    real = delivery.Deliverer._rcpt
    calls = []

    async def broken_once(self, client, recipient):  # type: ignore[no-untyped-def]
        calls.append(recipient)
        if len(calls) == 1:
            raise RuntimeError("a bug nobody foresaw")
        return await real(self, client, recipient)

    monkeypatch.setattr(delivery.Deliverer, "_rcpt", broken_once)
    relay = relay_factory(peer.port, throttle=shaper, warmup=False, max_connections_per_site=1,
                          policies={"default": {"max_connections": 1}})
    seen = _deliver(relay, [(_envelope(f"x{n}@{domain}"), MESSAGE) for n in range(3)], until=3)
    recipients = [r for e in relay.finals for r in e.recipients]
    assert [r.status for r in recipients] == [DELIVERED] * 3
    assert any(r.attempts == 2 for r in recipients)  # the one that met the bug was retried
    assert seen == {"open": 0, "leases": 0}


def test_control_character_in_an_address_is_refused_without_a_leak(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory
) -> None:
    (peer,) = peers(1, first=74)
    domain = _domain(dns_server, peer)
    relay = relay_factory(peer.port, max_connections_per_site=1)
    items = [(_envelope(f"a\rRCPT TO:<evil@x>@{domain}"), MESSAGE),
             (_envelope(f"b@{domain}"), MESSAGE)]
    seen = _deliver(relay, items, until=2)
    replies = sorted((r.address[0], r.status, r.last_reply[:9]) for e in relay.finals
                     for r in e.recipients)
    assert replies == [("a", BOUNCED, "553 5.1.3"), ("b", DELIVERED, "250 2.0.0")]
    assert peer.recipients == [f"b@{domain}"] and seen["open"] == 0
