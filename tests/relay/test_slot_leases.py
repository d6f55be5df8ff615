"""Shared connection slots: short leases a live relay renews, no spinning while waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.shaping import RedisShaper
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, new_id

from swiftmail_core.settings import Settings

RAW = b"From: a@sender.example\r\nTo: x@y\r\nSubject: s\r\n\r\nbody\r\n"
LEASE = 0.6  # seconds: the production lease is 15 s


def _client(redis_url: str):  # type: ignore[no-untyped-def]
    import redis.asyncio

    return redis.asyncio.Redis.from_url(redis_url)


def _route(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"l{uuid.uuid4().hex[:8]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


@pytest.fixture
def prefix(run_id) -> str:  # type: ignore[no-untyped-def]
    """A unique Redis key prefix."""
    return f"{run_id}:lease:{uuid.uuid4().hex[:6]}"


def _config(tmp_path: Path, prefix: str, **overrides) -> RelayConfig:  # type: ignore[no-untyped-def]
    config = RelayConfig.from_settings(Settings(data_dir=tmp_path), warmup=False,
                                       policies={"default": {"max_connections": 1}}, **overrides)
    return dataclasses.replace(config, redis_prefix=prefix)


def _run(relay, count: int, domain: str, before=None, during=None,  # type: ignore[no-untyped-def]
         timeout: float = 30.0) -> None:
    async def scenario() -> None:
        if before is not None:
            await before()
        await relay.start()
        try:
            ids = [relay.spool.write(Envelope(id=new_id(), mail_from="b@sender.example",
                                              recipients=[Recipient(f"u{n}@{domain}")]), RAW)
                   for n in range(count)]
            relay.notify(ids)
            if during is not None:
                await during()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(relay.finals) < count and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(scenario())


def test_slots_of_a_killed_relay_free_within_a_lease(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, redis_url, redis_client, prefix, tmp_path
) -> None:
    (peer,) = peers(1, first=80)
    domain = _route(dns_server, peer)
    site = f"mx.{domain}"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.relay.lease_child", redis_url, prefix, site, "1", str(LEASE)],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
    finally:
        child.kill()  # SIGKILL: nothing is released
        child.wait(10)
    assert redis_client.zcard(f"{prefix}:conn:site:{site}") == 1

    relay = relay_factory(peer.port, warmup=False, policies={"default": {"max_connections": 1}},
                          throttle=lambda config: RedisShaper(
                              dataclasses.replace(config, redis_prefix=prefix), _client(redis_url),
                              lease=LEASE))
    _run(relay, 3, domain, timeout=20)
    assert [r.status for e in relay.finals for r in e.recipients] == [DELIVERED] * 3


def test_a_live_relay_keeps_its_slot_past_many_leases(redis_url, prefix, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, prefix)

    async def scenario() -> tuple[bool, bool, int]:
        holder = RedisShaper(config, _client(redis_url), lease=LEASE)
        other = RedisShaper(config, _client(redis_url), lease=LEASE)
        try:
            assert await holder.acquire_connection("mx.held.example")
            await asyncio.sleep(LEASE * 5)  # the heartbeat renews it meanwhile
            while_held = await other.acquire_connection("mx.held.example")
            await holder.release_connection("mx.held.example")
            after = await other.acquire_connection("mx.held.example")
            await other.release_connection("mx.held.example")
            return while_held, after, await holder.renew()
        finally:
            await holder.close()
            await other.close()

    while_held, after, renewed = asyncio.run(scenario())
    assert (while_held, after, renewed) == (False, True, 0)


def test_waiting_for_a_shared_slot_does_not_spin(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, redis_url, prefix, tmp_path
) -> None:
    (peer,) = peers(1, first=81)
    domain = _route(dns_server, peer)
    site = f"mx.{domain}"
    config = _config(tmp_path, prefix)
    asks: list[str] = []

    def counting(relay_config):  # type: ignore[no-untyped-def]
        shaper = RedisShaper(dataclasses.replace(relay_config, redis_prefix=prefix),
                             _client(redis_url))
        real = shaper.acquire_connection

        async def acquire(slot_site: str) -> bool:
            asks.append(slot_site)
            return await real(slot_site)

        shaper.acquire_connection = acquire  # type: ignore[method-assign]
        return shaper

    holder: list[RedisShaper] = []

    async def hold() -> None:
        holder.append(RedisShaper(config, _client(redis_url)))
        assert await holder[0].acquire_connection(site)

    async def release_later() -> None:
        await asyncio.sleep(3.0)  # 10 messages wait for the one shared slot
        await holder[0].release_connection(site)
        await holder[0].close()

    relay = relay_factory(peer.port, warmup=False, workers=10,
                          policies={"default": {"max_connections": 1}}, throttle=counting)
    _run(relay, 10, domain, before=hold, during=release_later)
    assert [r.status for e in relay.finals for r in e.recipients] == [DELIVERED] * 10
    # 10 waiters for 3 s asked 600 times at a fixed 50 ms; backoff asks far less.
    assert len(asks) < 150, len(asks)
