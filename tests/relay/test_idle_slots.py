"""An idle kept-alive connection gives its shared slot back, so other relays get it."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import redis.asyncio
from swiftmail_relay import delivery
from swiftmail_relay.shaping import RedisShaper
from swiftmail_relay.spool import Envelope, Recipient, new_id

RAW = b"From: news@idle.example\r\nTo: x@y\r\nSubject: s\r\n\r\nbody\r\n"


def test_an_idle_relay_does_not_starve_another_of_the_site(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory, redis_url, run_id, tmp_path, monkeypatch) -> None:
    # Regression: a relay that finished its mail kept its connections idle, and the
    # heartbeat renewed their shared slots forever; a second relay for the same site
    # waited for a slot that never came back (seen with two relay hosts).
    monkeypatch.setattr(delivery, "IDLE_SECONDS", 0.5)
    (peer,) = peers(1, first=70)
    domain = f"t{uuid.uuid4().hex[:8]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    prefix = f"{run_id}:relay:{uuid.uuid4().hex[:6]}"

    def shaper(config):  # type: ignore[no-untyped-def]
        return RedisShaper(dataclasses.replace(config, redis_prefix=prefix),
                           redis.asyncio.Redis.from_url(redis_url))

    first, second = (
        relay_factory(peer.port, throttle=shaper, spool_dir=str(tmp_path / f"spool{i}"),
                      warmup=False, policies={"default": {"max_connections": 1}})
        for i in range(2))
    for index, relay in enumerate((first, second)):
        relay.spool.write(Envelope(id=new_id(), mail_from="b@idle.example",
                                   recipients=[Recipient(f"u{index}@{domain}")]), RAW)

    async def main() -> None:
        await first.start()
        try:
            await first.idle(20)  # delivered; its connection now waits idle
            await second.start()
            try:
                await second.idle(20)  # TimeoutError: the slot never came back
            finally:
                await second.stop()
        finally:
            await first.stop()

    asyncio.run(main())
    assert sorted(r for m in peer.messages for r in m.recipients) == [
        f"u0@{domain}", f"u1@{domain}"]
