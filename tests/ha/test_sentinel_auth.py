"""Sentinels with a password (``requirepass``): SwiftMail's clients give it, others are refused.

Real redis-server master and replica with a password and three
redis-sentinel processes that require their own, as the Ansible role sets
them up (``swiftmail_sentinel_password``). The settings
``redis_sentinel_password`` and ``redis_password`` reach every client built
by ``swiftmail_core.redis_clients``: the synchronous and asyncio clients and
huey find the master and follow a failover (which the Sentinels agree on
with each other using the same password); a client without the Sentinels'
password finds no master, and a Sentinel refuses a bare connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import redis
import redis.sentinel

from swiftmail_core import redis_clients
from swiftmail_core.settings import Settings
from tests.ha.conftest import REDIS_PASSWORD, SENTINEL_PASSWORD
from tests.ha.engines import SERVICE

FOLLOW_LIMIT = 60.0


def settings_for(sentinel_set, tmp_path, **changes) -> Settings:  # type: ignore[no-untyped-def]
    """Return settings that find the set's master through its Sentinels."""
    settings = Settings(data_dir=tmp_path, redis_sentinels=sentinel_set.sentinels,
                        redis_sentinel_service=SERVICE, redis_password=REDIS_PASSWORD,
                        redis_sentinel_password=SENTINEL_PASSWORD)
    return dataclasses.replace(settings, **changes)


def test_clients_with_the_sentinel_password_work_and_others_are_refused(
        protected_sentinel_set, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(protected_sentinel_set, tmp_path)
    client = redis_clients.client(settings)
    client.set("ha-auth", "1")
    assert client.get("ha-auth") == b"1"
    assert redis_clients.bounded(client, 1.0).get("ha-auth") == b"1"
    assert f"master at 127.0.0.1:{protected_sentinel_set.master_port}" in (
        redis_clients.describe(settings))

    async def async_get() -> bytes | None:
        async_client = redis_clients.async_client(settings)
        try:
            return await async_client.get("ha-auth")
        finally:
            await async_client.aclose()

    assert asyncio.run(async_get()) == b"1"
    huey = redis_clients.huey(settings, "ha-auth", results=False)
    huey.enqueue(huey.task(name="noop")(lambda: None).s())
    assert len(huey) == 1

    # A Sentinel refuses a connection that gives no password, or a wrong one.
    port = protected_sentinel_set.sentinel_ports[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, password="wrong").ping()
    # ... so SwiftMail's clients without it find no master.
    for changes in ({"redis_sentinel_password": None}, {"redis_sentinel_password": "wrong"}):
        refused = settings_for(protected_sentinel_set, tmp_path, **changes)
        with pytest.raises(redis.sentinel.MasterNotFoundError):
            redis_clients.client(refused, retries=0).ping()


def test_clients_follow_a_failover_of_sentinels_with_a_password(
        protected_sentinel_set, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(protected_sentinel_set, tmp_path)
    client = redis_clients.client(settings)
    assert client.incr("ha-auth-count") == 1
    protected_sentinel_set.kill_master()
    deadline = time.monotonic() + FOLLOW_LIMIT
    while True:
        try:
            count = client.incr("ha-auth-count")
            break
        except (redis.RedisError, OSError):
            assert time.monotonic() < deadline, protected_sentinel_set.logs()
            time.sleep(0.2)
    # The Sentinels agreed (with each other, by the shared password) on the replica.
    assert protected_sentinel_set.master_address()[1] == protected_sentinel_set.replica_port
    assert count in (1, 2)  # the first INCR may have been lost with the master
