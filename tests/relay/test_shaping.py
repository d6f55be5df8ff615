"""Shared limits in Redis: connection caps across relays, warm-up, backoff."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from swiftmail_relay.shaping import RedisShaper
from swiftmail_relay.spool import Envelope, Recipient, new_id

RAW = b"From: news@warm.example\r\nTo: x@y\r\nSubject: s\r\n\r\nbody\r\n"


def _route(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"t{uuid.uuid4().hex[:8]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


def _spool_many(relay, domain: str, count: int, sender: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for index in range(count):
        envelope = Envelope(id=new_id(), mail_from="b@warm.example",
                            recipients=[Recipient(f"u{index}@{domain}")], sender_domain=sender)
        ids.append(relay.spool.write(envelope, RAW))
    return ids


@pytest.fixture
def shaper(redis_url, run_id):  # type: ignore[no-untyped-def]
    """Factory: a RedisShaper on the test Redis under a unique key prefix."""
    prefix = f"{run_id}:relay:{uuid.uuid4().hex[:6]}"

    def factory(config):  # type: ignore[no-untyped-def]
        import dataclasses

        import redis.asyncio

        return RedisShaper(dataclasses.replace(config, redis_prefix=prefix),
                           redis.asyncio.Redis.from_url(redis_url))

    return factory


def test_two_relays_never_exceed_the_shared_connection_cap(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, shaper, tmp_path
) -> None:
    (peer,) = peers(1, first=60)
    domain = _route(dns_server, peer)
    relays = [
        relay_factory(peer.port, throttle=shaper, spool_dir=str(tmp_path / f"spool{i}"),
                      max_connections_per_site=6, messages_per_connection=3, warmup=False,
                      policies={"default": {"max_connections": 2}})
        for i in range(2)
    ]
    for relay in relays:
        _spool_many(relay, domain, 30)

    def run(relay) -> None:  # type: ignore[no-untyped-def]
        async def main() -> None:
            await relay.start()
            try:
                await relay.idle(60)
            finally:
                await relay.stop()

        asyncio.run(main())

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    pending = [r.last_reply for relay in relays for e in relay.envelopes.values()
               for r in e.recipients]
    assert len(peer.messages) == 60, pending
    assert peer.max_open <= 2
    assert peer.connections >= 20  # 60 messages, at most 3 per connection


def test_warmup_cap_holds_mail_back_without_rejecting(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, shaper
) -> None:
    (peer,) = peers(1, first=61)
    domain = _route(dns_server, peer)
    relay = relay_factory(peer.port, throttle=shaper, warmup_start_per_hour=5)
    _spool_many(relay, domain, 12, sender=f"w{uuid.uuid4().hex[:6]}.example")

    async def main() -> None:
        await relay.start()
        try:
            await relay.idle(30)
        finally:
            await relay.stop()

    asyncio.run(main())
    assert len(peer.messages) == 5
    waiting = [r for e in relay.envelopes.values() for r in e.recipients]
    assert len(waiting) == 7 and all(r.attempts == 0 and r.status == "pending" for r in waiting)


def test_backoff_rule_suspends_the_site(dns_server, peers, relay_factory, shaper, redis_client) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=62)
    peer.rcpt = lambda address: "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred"
    domain = _route(dns_server, peer)
    relay = relay_factory(peer.port, throttle=shaper, warmup=False, workers=1,
                          retry_base=30, retry_cap=60)
    _spool_many(relay, domain, 5)

    async def main() -> None:
        await relay.start()
        try:
            await relay.idle(30)
        finally:
            await relay.stop()

    asyncio.run(main())
    attempts = sorted(r.attempts for e in relay.envelopes.values() for r in e.recipients)
    assert attempts == [0, 0, 0, 0, 1]  # one real try; the rest wait without an attempt
    scope = relay.throttle.scope(f"mx.{domain}")
    assert redis_client.pttl(f"{relay.throttle.prefix}:suspend:{scope}") > 0


def test_two_relay_processes_never_exceed_the_shared_cap(  # type: ignore[no-untyped-def]
    dns_server, peers, redis_url, run_id, tmp_path
) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    from swiftmail_relay.spool import Spool

    (peer,) = peers(1, first=63)
    domain = _route(dns_server, peer)
    prefix = f"{run_id}:relay:{uuid.uuid4().hex[:6]}"
    processes = []
    for index in range(2):
        spool_dir = tmp_path / f"spool{index}"
        spool = Spool(spool_dir)
        for number in range(30):
            spool.write(Envelope(id=new_id(), mail_from="b@warm.example",
                                 recipients=[Recipient(f"p{index}-{number}@{domain}")]), RAW)
        options = {"data_dir": str(tmp_path), "spool_dir": str(spool_dir),
                   "dns_port": dns_server.port, "smtp_port": peer.port,
                   "redis_url": redis_url, "prefix": prefix}
        log = (tmp_path / f"child{index}.log").open("wb")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tests.relay.shaping_child", json.dumps(options)],
            cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT))
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(90))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(None)
    logs = [(tmp_path / f"child{index}.log").read_text()[-2000:] for index in range(2)]
    assert codes == [0, 0], logs
    assert len(peer.messages) == 60
    assert peer.max_open <= 2
    assert peer.connections >= 20


def test_idle_domain_rewarms_from_day_zero(shaper, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.mx import MxHost, Route

    from swiftmail_core.settings import Settings

    config = RelayConfig.from_settings(Settings(data_dir=tmp_path), warmup_start_per_hour=2)
    throttle = shaper(config)
    route = Route("x.example", (MxHost("mx.x.example", 10, ("127.0.0.1",)),))
    domain = f"idle{uuid.uuid4().hex[:6]}.example"
    envelope = Envelope(id=new_id(), mail_from="a@b", recipients=[], sender_domain=domain)
    now = time.time()
    # Warmed for 10 days (cap 2 * 1.4**10 = 57/hour), then idle for 31 days.
    redis_client.set(f"{throttle.prefix}:warm:start:domain:{domain}", now - 41 * 86400)
    redis_client.set(f"{throttle.prefix}:warm:last:domain:{domain}", now - 31 * 86400)
    config_ip = f"{throttle.prefix}:warm:start:ip:{config.source_ip}"
    redis_client.set(config_ip, now - 61 * 86400)  # the IP is fully warm

    async def admits() -> list[float]:
        try:
            return [await throttle.admit(route, envelope, 1) for _ in range(4)]
        finally:
            await throttle.close()

    waits = asyncio.run(admits())
    assert waits[:2] == [0.0, 0.0] and all(w > 0 for w in waits[2:])  # day 0 again: 2/hour
    assert throttle.warmup_cap(10) == 57


def test_mail_waiting_on_warmup_still_expires(dns_server, peers, relay_factory, shaper) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=64)
    domain = _route(dns_server, peer)
    relay = relay_factory(peer.port, throttle=shaper, warmup_start_per_hour=1, max_age=1.0)
    _spool_many(relay, domain, 3, sender=f"x{uuid.uuid4().hex[:6]}.example")

    async def main() -> None:
        await relay.start()
        try:
            for _ in range(500):
                if len(relay.finals) == 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(main())
    statuses = sorted(r.status for e in relay.finals for r in e.recipients)
    assert statuses == ["delivered", "expired", "expired"]
    assert all(r.attempts == 0 for e in relay.finals for r in e.recipients if r.status == "expired")


def test_limits_hold_mail_when_redis_cannot_be_asked(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A lost counter never means unthrottled sending: admission holds, no slot is granted."""
    import redis.asyncio
    from swiftmail_relay import shaping
    from swiftmail_relay.classify import Reply
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.mx import MxHost, Route

    from swiftmail_core.settings import Settings

    monkeypatch.setattr(shaping, "UNAVAILABLE_SLOT_PAUSE", 0.01)
    config = RelayConfig.from_settings(Settings(data_dir=tmp_path))
    # Nothing listens on port 1: every command fails with a connection error.
    shaper = RedisShaper(config, redis.asyncio.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.5, retry=None))
    route = Route("gmail.com", (MxHost("gmail-smtp-in.l.google.com", 5, ("127.0.0.9",)),))
    envelope = Envelope(id=new_id(), mail_from="b@warm.example",
                        recipients=[Recipient("u@gmail.com")])

    async def scenario() -> None:
        assert await shaper.admit(route, envelope, 1) == shaping.UNAVAILABLE_HOLD_SECONDS
        assert await shaper.acquire_connection(route.site) is False
        await shaper.release_connection(route.site)  # never raises
        await shaper.observe(route, [Reply(421, "4.7.0 [TSS04] Messages deferred")])
        # The backoff Redis could not store is kept in this process.
        assert await shaper.admit(route, envelope, 1) > 1000

    asyncio.run(scenario())
    assert shaper.unavailable >= 3
