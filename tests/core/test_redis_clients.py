"""Every Redis client comes from the settings: a URL's server, or Sentinel's master.

Sentinel failover with real redis-server and redis-sentinel processes is in
tests/ha/test_redis_failover.py.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import uuid

import pytest

from swiftmail_core import redis_clients
from swiftmail_core.errors import ConfigurationError

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_clients_reach_the_configured_server(settings, redis_client) -> None:  # type: ignore[no-untyped-def]
    key = f"rc-{uuid.uuid4().hex}"
    redis_clients.client(settings).set(key, "1", ex=60)
    assert redis_client.get(key) == b"1"
    queue = redis_clients.huey(settings, key, results=False)
    queue.enqueue(queue.task()(lambda: None).s())
    assert queue.pending_count() == 1
    queue.flush()


def test_malformed_sentinels_name_the_setting(settings) -> None:  # type: ignore[no-untyped-def]
    broken = dataclasses.replace(settings, redis_sentinels=("10.0.0.5",))
    with pytest.raises(ConfigurationError, match="redis_sentinels"):
        redis_clients.client(broken)
    assert not broken.uses_embedded_redis


def test_sentinel_addresses_take_ipv6(settings) -> None:  # type: ignore[no-untyped-def]
    configured = dataclasses.replace(settings, redis_sentinels=("[::1]:26379", "10.0.0.6:26380"))
    assert redis_clients.sentinel_addresses(configured) == [("::1", 26379), ("10.0.0.6", 26380)]


def test_no_other_module_builds_a_redis_client() -> None:
    """One owner: product code asks redis_clients, never redis-py or huey directly."""
    pattern = re.compile(r"redis\.Redis\(|from_url\(|RedisHuey\(|\bRedis\(connection_pool")
    owners = {"swiftmail_core/redis_clients.py", "swiftmail_core/embedded.py"}
    found = []
    for folder in ("swiftmail_core", "relay", "plugins", "web"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            # swiftmail_core/testing: the pytest fixtures, on the test run's own server.
            if (relative not in owners and not relative.startswith("swiftmail_core/testing/")
                    and pattern.search(path.read_text())):
                found.append(relative)
    assert found == []


def test_sentinel_clients_ask_the_sentinels_on_every_reconnect(settings) -> None:  # type: ignore[no-untyped-def]
    """Every client kind, the bounded one included, uses the connection that looks the master up."""
    configured = dataclasses.replace(settings, redis_sentinels=("127.0.0.1:1",))
    sync = redis_clients.client(configured)
    assert sync.connection_pool.connection_class is redis_clients.SentinelConnection
    bounded = redis_clients.bounded(sync, 0.05)
    assert bounded.connection_pool.connection_class is redis_clients.SentinelConnection
    asynchronous = redis_clients.async_client(configured)
    assert asynchronous.connection_pool.connection_class is redis_clients.AsyncSentinelConnection
