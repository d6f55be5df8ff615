"""A relay that takes connection slots and then hangs (to be killed with -9).

Usage: python -m tests.relay.lease_child REDIS_URL PREFIX SITE COUNT LEASE
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

import redis.asyncio
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.shaping import RedisShaper

from swiftmail_core.settings import Settings


async def main(redis_url: str, prefix: str, site: str, count: int, lease: float) -> None:
    config = dataclasses.replace(
        RelayConfig.from_settings(Settings(data_dir=Path("/nonexistent")), spool_dir="/nonexistent"),
        redis_prefix=prefix)
    shaper = RedisShaper(config, redis.asyncio.Redis.from_url(redis_url), lease=lease)
    for _ in range(count):
        assert await shaper.acquire_connection(site)
    print("held", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    url, prefix, site, count, lease = sys.argv[1:6]
    asyncio.run(main(url, prefix, site, int(count), float(lease)))
