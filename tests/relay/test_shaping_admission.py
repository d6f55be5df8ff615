"""Shaping that holds: budgets taken together at sending time, groups extended, queue detail."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid

import pytest
from click.testing import CliRunner
from swiftmail_relay import queue_ops
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.mx import MxHost, Route
from swiftmail_relay.plugin import relay_group
from swiftmail_relay.shaping import DEFAULT_GROUPS, RedisShaper, provider_groups
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, Spool, new_id

from swiftmail_core.cli.state import CliState
from swiftmail_core.settings import Settings


def _client(redis_url: str):  # type: ignore[no-untyped-def]
    import redis.asyncio

    return redis.asyncio.Redis.from_url(redis_url)


RAW = b"From: news@warm.example\r\nTo: x@y\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def prefix(run_id) -> str:  # type: ignore[no-untyped-def]
    """A unique Redis key prefix."""
    return f"{run_id}:admit:{uuid.uuid4().hex[:6]}"


def _route(dns_server, peer) -> str:  # type: ignore[no-untyped-def]
    domain = f"a{uuid.uuid4().hex[:8]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return domain


def test_a_warmup_refusal_takes_nothing_from_the_ip_budget(  # type: ignore[no-untyped-def]
    redis_url, redis_client, prefix, tmp_path
) -> None:
    config = dataclasses.replace(
        RelayConfig.from_settings(Settings(data_dir=tmp_path), warmup_start_per_hour=100),
        redis_prefix=prefix)
    route = Route("x.example", (MxHost("mx.x.example", 10, ("127.0.0.1",)),))
    domain = f"cold{uuid.uuid4().hex[:6]}.example"
    envelope = Envelope(id=new_id(), mail_from="a@b", recipients=[], sender_domain=domain,
                        warmup_plan={"start_per_hour": 3})

    async def admits() -> list[float]:
        shaper = RedisShaper(config, _client(redis_url))
        try:
            return [await shaper.admit(route, envelope, 1, source="ipA") for _ in range(10)]
        finally:
            await shaper.close()

    waits = asyncio.run(admits())
    assert [w == 0 for w in waits] == [True] * 3 + [False] * 7
    assert {getattr(w, "reason", None) for w in waits[3:]} == {"warm-up"}
    hour = int(time.time() // 3600)
    ip_used = redis_client.get(f"{prefix}:warm:n:ip:ipA:other:{hour}")
    assert int(ip_used) == 3  # the domain's refusals took nothing from the address


def test_the_rate_budget_is_taken_only_when_a_connection_is_in_hand(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, redis_url, redis_client, prefix
) -> None:
    (peer,) = peers(1, first=87)
    domain = _route(dns_server, peer)
    site = f"mx.{domain}"
    policies = {"default": {"max_connections": 3, "messages_per_second": 2}}
    relay = relay_factory(peer.port, warmup=False, workers=10, policies=policies,
                          throttle=lambda config: RedisShaper(
                              dataclasses.replace(config, redis_prefix=prefix), _client(redis_url)))
    holder_config = dataclasses.replace(relay.config, redis_prefix=prefix, policies=policies)
    taken_while_held: list[int] = []

    async def scenario() -> None:
        holder = RedisShaper(holder_config, _client(redis_url))
        for _ in range(3):  # another relay holds every shared slot
            assert await holder.acquire_connection(site)
        await relay.start()
        try:
            relay.notify([relay.spool.write(Envelope(
                id=new_id(), mail_from="b@warm.example",
                recipients=[Recipient(f"u{n}@{domain}")]), RAW) for n in range(8)])
            await asyncio.sleep(2.5)
            keys = [k async for k in holder.redis.scan_iter(f"{prefix}:mps:*")]
            taken_while_held.append(sum([int(await holder.redis.get(k) or 0) for k in keys]))
            for _ in range(3):
                await holder.release_connection(site)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(relay.finals) < 8 and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await holder.close()
            await relay.stop()

    asyncio.run(scenario())
    # Before, messages passed the rate check, then queued for a slot and went
    # out together when slots freed: a burst over messages_per_second.
    assert taken_while_held == [0]
    assert [r.status for e in relay.finals for r in e.recipients] == [DELIVERED] * 8


def test_provider_groups_extend_the_builtins() -> None:
    groups = provider_groups({"fastmail": ["messagingengine.com"], "apple": [],
                              "yahoo": ["yahoodns.net"]})
    assert list(groups)[:2] == ["fastmail", "yahoo"]  # configured ones match first
    assert groups["google"] == DEFAULT_GROUPS["google"]
    assert "apple" not in groups and groups["yahoo"] == ("yahoodns.net",)
    assert provider_groups(None) == DEFAULT_GROUPS
    assert provider_groups({name: [] for name in DEFAULT_GROUPS}) == {}


def test_shaper_groups_use_the_extension(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = RelayConfig.from_settings(Settings(data_dir=tmp_path),
                                       provider_groups={"fastmail": ["messagingengine.com"]})
    shaper = RedisShaper(config, _client(redis_url))
    assert shaper.group("in1-smtp.messagingengine.com") == "fastmail"
    assert shaper.group("gmail-smtp-in.l.google.com") == "google"


def _invoke(tmp_path, *args: str):  # type: ignore[no-untyped-def]
    state = CliState(config=str(tmp_path / "none.toml"), overrides={"data_dir": str(tmp_path)})
    return CliRunner().invoke(relay_group, list(args), obj=state, catch_exceptions=False)


def test_queue_detail_shows_each_message_and_what_it_waits_for(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path / "spool")
    now = time.time()
    fresh = spool.write(Envelope(id=new_id(), mail_from="x@s.example", tenant_id="t1",
                                 recipients=[Recipient("a@new.example")]), b"m")
    deferred = Envelope(id=new_id(), mail_from="x@s.example", tenant_id="t2",
                        recipients=[Recipient("b@slow.example", attempts=2,
                                              next_attempt_at=now + 600,
                                              last_reply="451 4.7.1 try again later")])
    spool.write(deferred, b"m")
    spool.save_state(deferred)
    warming = spool.write(Envelope(id=new_id(), mail_from="x@s.example", tenant_id="t1",
                                   recipients=[Recipient("c@cold.example")]), b"m")
    queue_ops.write_waits(spool, {warming: ("warm-up", now + 1800)}, inflight=[])

    rows = {row["queue_id"]: row for row in json.loads(
        _invoke(tmp_path, "queue", "--detail", "--json").output)}
    assert rows[fresh]["waits_for"] == "delivery" and rows[fresh]["tenant"] == "t1"
    assert rows[deferred.id]["waits_for"] == "retry"
    assert rows[deferred.id]["attempts"] == 2
    assert rows[deferred.id]["last_reply"] == "451 4.7.1 try again later"
    assert rows[deferred.id]["destination"] == ["slow.example"]
    assert rows[warming]["waits_for"] == "warm-up"
    assert rows[warming]["next_attempt"] == pytest.approx(now + 1800)
    table = _invoke(tmp_path, "queue", "--detail", "--domain", "slow.example").output
    assert deferred.id in table and "retry" in table and fresh not in table


def test_a_running_relay_publishes_warmup_waits(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, redis_url, prefix, tmp_path
) -> None:
    (peer,) = peers(1, first=88)
    domain = _route(dns_server, peer)
    relay = relay_factory(peer.port, warmup_start_per_hour=1, scan_interval=0.1,
                          throttle=lambda config: RedisShaper(
                              dataclasses.replace(config, redis_prefix=prefix), _client(redis_url)))
    sender = f"w{uuid.uuid4().hex[:6]}.example"

    async def scenario() -> None:
        await relay.start()
        try:
            relay.notify([relay.spool.write(Envelope(
                id=new_id(), mail_from="b@warm.example", sender_domain=sender,
                recipients=[Recipient(f"u{n}@{domain}")]), RAW) for n in range(2)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while loop.time() < deadline:
                await asyncio.sleep(0.1)
                rows = queue_ops.detail(relay.spool)
                if len(relay.finals) == 1 and [r["waits_for"] for r in rows] == ["warm-up"]:
                    break
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (row,) = queue_ops.detail(relay.spool)
    assert row["waits_for"] == "warm-up" and row["next_attempt"] > time.time() + 60


def test_a_transaction_larger_than_the_rate_still_goes(redis_url, prefix, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(
        RelayConfig.from_settings(Settings(data_dir=tmp_path), warmup=False,
                                  policies={"default": {"messages_per_second": 2}}),
        redis_prefix=prefix)
    route = Route("big.example", (MxHost("mx.big.example", 10, ("127.0.0.1",)),))
    envelope = Envelope(id=new_id(), mail_from="a@b", recipients=[])

    async def admit() -> float:
        shaper = RedisShaper(config, _client(redis_url))
        try:
            for _ in range(3):  # a window that is already full makes it wait, at most 3 s
                wait = await shaper.admit(route, envelope, 5)
                if wait == 0:
                    return wait
                await asyncio.sleep(wait)
            return wait
        finally:
            await shaper.close()

    assert asyncio.run(admit()) == 0  # 5 recipients against 2/s: it was never admitted


def test_submission_records_the_declared_body_type() -> None:
    from swiftmail_relay.submission import _body_type

    assert _body_type(["SIZE=100", "BODY=8bitmime", "SMTPUTF8"]) == "8BITMIME"
    assert _body_type(["SIZE=100"]) == ""
