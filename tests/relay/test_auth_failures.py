"""Failed AUTH counted across relay processes through Redis."""

from __future__ import annotations

import asyncio
import socket
import uuid

import redis.asyncio
from swiftmail_relay.auth_failures import AuthFailures


def test_failed_auth_is_counted_once_across_processes(redis_url, run_id) -> None:  # type: ignore[no-untyped-def]
    # Regression: each listener process counted on its own, so a guesser spreading
    # attempts across N processes (or hosts) had N times the allowance.
    prefix = f"{run_id}:relay:{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
        first, second = (AuthFailures(limit=4, base_delay=1.0, max_delay=64.0,
                                      client=client, prefix=prefix, redis_wait=30.0)
                         for client in clients)
        try:
            delays = [await limiter.failed("192.0.2.7")
                      for limiter in (first, second, first, second)]
            assert delays == [1.0, 2.0, 4.0, 8.0]  # one growing delay, not two
            assert await first.blocked("192.0.2.7")
            assert await second.blocked("192.0.2.7")
            assert not await second.blocked("192.0.2.8")
            ttl = await clients[0].ttl(f"{prefix}:authfail:192.0.2.7")
            assert 0 < ttl <= 900  # forgiven after the window
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())


def test_redis_down_keeps_the_local_count() -> None:
    async def scenario() -> None:
        # Nothing listens on port 1: every Redis call fails at once.
        client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
        limiter = AuthFailures(limit=3, base_delay=1.0, client=client)
        try:
            assert [await limiter.failed("2001:db8::1") for _ in range(3)] == [1.0, 2.0, 4.0]
            assert await limiter.blocked("2001:db8::2")  # same /64
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_redis_that_does_not_answer_holds_no_auth_for_long() -> None:
    # A listening socket nobody accepts on: connects, then never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)

    async def scenario() -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=silent.getsockname()[1])
        limiter = AuthFailures(limit=2, base_delay=1.0, client=client, redis_wait=0.2)
        try:
            # The client has no timeout: each answer here is the limiter giving up.
            assert await limiter.failed("192.0.2.9") == 1.0
            assert await limiter.failed("192.0.2.9") == 2.0
            assert await limiter.blocked("192.0.2.9")
        finally:
            await client.aclose()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))  # a hang fails, not stalls the run
    finally:
        silent.close()
