"""A relay process for the shared-limits test: deliver its spool, then exit.

Usage: python -m tests.relay.shaping_child CONFIG_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import redis.asyncio
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.engine import Relay
from swiftmail_relay.shaping import RedisShaper

from swiftmail_core.settings import Settings


async def main(options: dict) -> None:  # type: ignore[type-arg]
    settings = Settings(data_dir=Path(options["data_dir"]), dns_nameservers=("127.0.0.1",),
                        dns_port=options["dns_port"])
    config = RelayConfig.from_settings(
        settings, spool_dir=options["spool_dir"], smtp_port=options["smtp_port"],
        allow_networks="127.0.0.0/8", retry_base=0.2, retry_cap=0.5, scan_interval=0.2,
        hostname="shaping.relay.test", workers=16, max_connections_per_site=6,
        messages_per_connection=3, warmup=False, redis_prefix=options["prefix"],
        policies={"default": {"max_connections": 2}})
    relay = Relay(settings, config, throttle=RedisShaper(
        config, redis.asyncio.Redis.from_url(options["redis_url"])))
    await relay.start()
    try:
        await relay.idle(40)
    except TimeoutError:
        shaper = relay.throttle
        keys = [k async for k in shaper.redis.scan_iter(f"{options['prefix']}:conn:*")]
        slots = {k.decode(): await shaper.redis.zrange(k, 0, -1, withscores=True) for k in keys}
        print("DIAG open", relay.deliverer._open, "idle",
              {k: len(v) for k, v in relay.deliverer._idle.items()},
              "inflight", len(relay._inflight), "ready", relay._ready.qsize(),
              "held", shaper._held, "slots", slots,
              "pending", [(r.attempts, r.next_attempt_at - relay.clock(), r.last_reply)
                          for e in relay.envelopes.values() for r in e.pending][:5], flush=True)
        raise
    finally:
        await relay.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
