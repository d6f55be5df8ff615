"""Kill the Redis master: Sentinel promotes the replica and every SwiftMail client follows.

Real redis-server master and replica, three redis-sentinel processes
(``down-after-milliseconds`` 1000). While a writer adds tracking hits
(through the hot path's bounded client) and counts with INCR, the master is
killed with SIGKILL; the huey queue, the API rate limiter and the relay's
connection slots must all work again without a restart, through the
Sentinels, and a running huey consumer must go on taking tasks. Measured (printed, never asserted): seconds from the kill to each
client working, hits refused while there was no master, hits and counts
acknowledged by the old master but lost with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import falcon
import pytest
import redis

from swiftmail_core import redis_clients
from swiftmail_core.principal import Principal
from swiftmail_core.settings import Settings
from swiftmail_core.tracking_ingest import HitStream
from swiftmail_core.tracking_ingest.hits import Hit
from tests.ha.conftest import measure
from tests.ha.engines import SERVICE

RECOVERY_LIMIT = 60.0


class Writer(threading.Thread):
    """Add hits and count, as the tracking hot path and the limiters do, until stopped."""

    def __init__(self, settings: Settings, stream: str, counter: str) -> None:
        super().__init__(daemon=True)
        self.hits = HitStream(redis_clients.bounded(redis_clients.client(settings), 0.05), stream)
        self.counter = redis_clients.bounded(redis_clients.client(settings), 0.05)
        self.counter_key = counter
        self.stop = threading.Event()
        self.failed_once = threading.Event()
        self.acked_before: list[str] = []
        self.refused = 0
        self.last_count_before = 0
        self.first_count_after: int | None = None

    def run(self) -> None:
        tenant = uuid.uuid4()
        while not self.stop.is_set():
            try:
                entry = self.hits.add(Hit("open", tenant, len(self.acked_before) + 1))
                count = int(self.counter.incr(self.counter_key))
            except (redis.RedisError, OSError):
                self.refused += 1
                self.failed_once.set()
                time.sleep(0.01)
                continue
            if not self.failed_once.is_set():
                self.acked_before.append(entry)
                self.last_count_before = count
            elif self.first_count_after is None:
                self.first_count_after = count
            time.sleep(0.002)


@pytest.mark.parametrize("sentinel_set", [1000, 5000], indirect=True,
                         ids=["down-after-1s", "down-after-5s"])
def test_clients_follow_a_sentinel_failover(sentinel_set, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.shaping import RedisShaper
    from swiftmail_web.ratelimit import Limits, RateLimiter

    settings = Settings(data_dir=tmp_path, redis_sentinels=sentinel_set.sentinels,
                        redis_sentinel_service=SERVICE)
    assert not settings.uses_embedded_redis
    huey = redis_clients.huey(settings, "ha-failover", results=False)
    task = huey.task(name="noop")(lambda: None)
    # A consumer, as `swiftmail worker` runs one, that must keep taking tasks.
    consumed = threading.Event()
    flag = huey.task(name="flag")(consumed.set)
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False,
                                    max_delay=1.0)
    limiter = RateLimiter(redis_clients.client(settings, timeout=2.0, retries=1),
                          Limits(10**6, 10**6), prefix="ha:")
    principal = Principal(tenant_id=uuid.uuid4(), role="admin")
    shaper = RedisShaper(RelayConfig.from_settings(settings), redis_clients.async_client(settings))
    # The shaper lives on one event loop, as in the relay; probes hand it their calls.
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    def enqueue() -> bool:
        huey.enqueue(task.s())
        return True

    def rate_limit() -> bool:
        response = falcon.Response()
        limiter.hit(principal, response)  # fails open: only a counted hit sets the header
        return response.get_header("RateLimit-Remaining") is not None

    def relay_slot() -> bool:
        async def take_and_give_back() -> bool:
            if not await shaper.acquire_connection("mx.ha.example"):
                return False
            await shaper.release_connection("mx.ha.example")
            return True

        return asyncio.run_coroutine_threadsafe(take_and_give_back(), loop).result(30)

    def huey_consume() -> bool:
        consumed.clear()
        huey.enqueue(flag.s())
        return consumed.wait(5)

    checks = {"huey_enqueue": enqueue, "huey_consume": huey_consume, "rate_limit": rate_limit,
              "relay_slot": relay_slot}
    consumer.start()
    try:
        assert all(check() for check in checks.values())
        assert sentinel_set.master_address()[1] == sentinel_set.master_port
        writer = Writer(settings, f"ha-hits-{uuid.uuid4().hex[:6]}", "ha:count")
        writer.start()
        time.sleep(1.0)  # some acknowledged hits and counts before the kill

        killed_at, killed_wall = time.monotonic(), time.time()
        sentinel_set.kill_master()
        recovered: dict[str, float] = {}

        def probe(name: str) -> None:
            # Each client on its own, as in its own process: call until a call works.
            while time.monotonic() - killed_at < RECOVERY_LIMIT:
                try:
                    if checks[name]():
                        recovered[name] = round(time.monotonic() - killed_at, 2)
                        return
                except (redis.RedisError, OSError):
                    pass
                time.sleep(0.1)

        probes = [threading.Thread(target=probe, args=(name,), daemon=True) for name in checks]
        for thread in probes:
            thread.start()
        for thread in probes:
            thread.join(RECOVERY_LIMIT + 30)
        assert set(recovered) == set(checks), sentinel_set.logs()
        promoted = sentinel_set.master_address()
        while writer.first_count_after is None:
            assert time.monotonic() - killed_at < RECOVERY_LIMIT
            time.sleep(0.05)
        writer.stop.set()
        writer.join(10)

        assert promoted[1] == sentinel_set.replica_port
        survivors = {entry.decode() for entry, _ in
                     redis_clients.client(settings).xrange(writer.hits.name)}
        lost_hits = [entry for entry in writer.acked_before if entry not in survivors]
        sdown = sentinel_set.event_times("+sdown")
        switched = sentinel_set.event_times("+switch-master")
        measure("redis_sentinel_failover",
                down_after_milliseconds=sentinel_set.down_after_ms,
                seconds_to_recover=recovered,
                sentinel_seconds_to_detect=round(min(sdown) - killed_wall, 2) if sdown else None,
                sentinel_seconds_to_switch=round(min(switched) - killed_wall, 2)
                if switched else None,
                hits_acknowledged_before_kill=len(writer.acked_before),
                hits_acknowledged_then_lost=len(lost_hits),
                hits_refused_while_no_master=writer.refused,
                counts_acknowledged_then_lost=writer.last_count_before
                - (writer.first_count_after - 1))
    finally:
        consumer.stop()
        asyncio.run_coroutine_threadsafe(shaper.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()


def test_clients_leave_a_master_that_went_silent(sentinel_set, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A master that stops answering (SIGSTOP: its port still accepts) is left for the new one.

    redis-py reconnected a timed-out connection to the address it had, never
    asking the Sentinels again; on a silent master every retry then timed out
    against it (the cluster test's cut cable showed it).
    """
    import signal

    settings = Settings(data_dir=tmp_path, redis_sentinels=sentinel_set.sentinels,
                        redis_sentinel_service=SERVICE)
    client = redis_clients.client(settings)
    async_client = redis_clients.async_client(settings)
    loop = asyncio.new_event_loop()
    try:
        client.set("silent", 0)
        loop.run_until_complete(async_client.set("silent-async", 0))  # a pooled connection each
        stopped_at = time.monotonic()
        sentinel_set.processes["master"].send_signal(signal.SIGSTOP)
        while sentinel_set.master_address()[1] != sentinel_set.replica_port:
            assert time.monotonic() - stopped_at < RECOVERY_LIMIT, sentinel_set.logs()
            time.sleep(0.2)
        assert client.incr("silent") == 1
        assert loop.run_until_complete(async_client.incr("silent-async")) == 1
        measure("redis_master_silent", seconds_to_write=round(time.monotonic() - stopped_at, 2))
    finally:
        loop.run_until_complete(async_client.aclose())
        loop.close()
