"""Outcomes reach the platform: ledger status, events, suppressions, DKIM."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid

import dkim as dkimpy
from swiftmail_relay.handoff import spool_message
from swiftmail_relay.outcomes import record_outcomes
from swiftmail_relay.sink import OutcomeSink

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Event, Message, Suppression


def _message(domain: str, to: str) -> bytes:
    return (
        f"From: News <news@{domain}>\r\nTo: {to}\r\nSubject: Hello\r\n"
        f"Date: Fri, 27 Nov 2026 20:00:00 +0000\r\nMessage-ID: <{uuid.uuid4().hex}@{domain}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<p>Hello there</p>\r\n"
    ).encode()


def _deliver(relay, settings, tenant_id, ledger_id, to, domain) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        await relay.start()
        try:
            queue_id = spool_message(
                settings, raw=_message(domain, to), envelope_from=f"bounces@{domain}",
                recipients=[to], tenant_id=tenant_id, ledger_ids=[ledger_id],
            )
            relay.notify([queue_id])
            for _ in range(1000):
                if relay.finals:
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert relay.finals, "message not finished"


def _setup(runtime, relay_factory, peer, tmp_path, **overrides):  # type: ignore[no-untyped-def]
    settings = dataclasses.replace(runtime.settings, plugins={"relay": {
        "spool_dir": str(tmp_path / "spool"), "bounce_domain": "bounce.relay.test"}})
    sink = OutcomeSink(functools.partial(record_outcomes, plugins=runtime.plugins))
    relay = relay_factory(peer.port, settings=settings, sink=sink,
                          bounce_domain="bounce.relay.test", **overrides)
    return settings, relay


def _events(tenant_id, ledger_id) -> list[Event]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return list(Event.select().where(Event.message_id == ledger_id))


def test_delivered_mail_is_signed_and_recorded(  # type: ignore[no-untyped-def]
    runtime, tenant_a, dns_server, peers, relay_factory, sending_domain, ledger_row, tmp_path,
    dkim_dnsfunc,
) -> None:
    (peer,) = peers(1, first=40)
    domain = sending_domain(tenant_a.id, f"s{uuid.uuid4().hex[:8]}.example")
    rcpt_domain = f"r{uuid.uuid4().hex[:8]}.example"
    dns_server.add(rcpt_domain, "MX", f"10 mx.{rcpt_domain}.")
    dns_server.add(f"mx.{rcpt_domain}", "A", peer.host)
    to = f"user@{rcpt_domain}"
    ledger_id = ledger_row(tenant_a.id, to)
    settings, relay = _setup(runtime, relay_factory, peer, tmp_path)
    _deliver(relay, settings, tenant_a.id, ledger_id, to, domain)
    (received,) = peer.messages
    assert dkimpy.verify(received.data, dnsfunc=dkim_dnsfunc)
    assert received.mail_from.startswith("b+") and received.mail_from.endswith("@bounce.relay.test")
    with tenant_tx(tenant_a.id):
        row = Message.get((Message.tenant_id == tenant_a.id) & (Message.id == ledger_id))
    assert row.status == "delivered" and row.sent_at is not None
    assert [e.type for e in _events(tenant_a.id, ledger_id)] == ["delivered"]


def test_permanent_failure_bounces_and_suppresses(  # type: ignore[no-untyped-def]
    runtime, tenant_a, dns_server, peers, relay_factory, sending_domain, ledger_row, tmp_path,
) -> None:
    (peer,) = peers(1, first=41)
    peer.rcpt = lambda address: "550 5.1.1 <x>: Recipient address rejected: User unknown"
    domain = sending_domain(tenant_a.id, f"s{uuid.uuid4().hex[:8]}.example")
    rcpt_domain = f"r{uuid.uuid4().hex[:8]}.example"
    dns_server.add(rcpt_domain, "MX", f"10 mx.{rcpt_domain}.")
    dns_server.add(f"mx.{rcpt_domain}", "A", peer.host)
    to = f"Gone@{rcpt_domain}"
    ledger_id = ledger_row(tenant_a.id, to)
    settings, relay = _setup(runtime, relay_factory, peer, tmp_path)
    _deliver(relay, settings, tenant_a.id, ledger_id, to, domain)
    (event,) = _events(tenant_a.id, ledger_id)
    assert event.type == "bounced" and event.bounce_class == "hard"
    with tenant_tx(tenant_a.id):
        row = Message.get((Message.tenant_id == tenant_a.id) & (Message.id == ledger_id))
        suppressed = list(Suppression.select().where(Suppression.email_lower == to.lower()))
    assert row.status == "bounced" and "5.1.1" in row.last_error
    assert [s.reason for s in suppressed] == ["hard_bounce"]


def test_expiry_records_expired_without_suppression(  # type: ignore[no-untyped-def]
    runtime, tenant_a, dns_server, peers, relay_factory, sending_domain, ledger_row, tmp_path,
) -> None:
    (peer,) = peers(1, first=42)
    peer.rcpt = lambda address: "450 4.2.1 mailbox busy"
    domain = sending_domain(tenant_a.id, f"s{uuid.uuid4().hex[:8]}.example")
    rcpt_domain = f"r{uuid.uuid4().hex[:8]}.example"
    dns_server.add(rcpt_domain, "MX", f"10 mx.{rcpt_domain}.")
    dns_server.add(f"mx.{rcpt_domain}", "A", peer.host)
    to = f"busy@{rcpt_domain}"
    ledger_id = ledger_row(tenant_a.id, to)
    settings, relay = _setup(runtime, relay_factory, peer, tmp_path, max_age=1.0, retry_base=0.3)
    _deliver(relay, settings, tenant_a.id, ledger_id, to, domain)
    types = [e.type for e in _events(tenant_a.id, ledger_id)]
    assert types[-1] == "expired" and "bounced" not in types and "deferred" in types
    with tenant_tx(tenant_a.id):
        assert Suppression.select().where(Suppression.email_lower == to.lower()).count() == 0
        row = Message.get((Message.tenant_id == tenant_a.id) & (Message.id == ledger_id))
    assert row.status == "expired"


def test_tenant_warmup_plan_travels_with_the_message(  # type: ignore[no-untyped-def]
    runtime, tenant_a, dns_server, peers, relay_factory, sending_domain, tmp_path, redis_url, run_id,
) -> None:
    import redis.asyncio
    from swiftmail_relay.shaping import RedisShaper

    (peer,) = peers(1, first=43)
    domain = sending_domain(tenant_a.id, f"s{uuid.uuid4().hex[:8]}.example",
                            warmup_plan={"start_per_hour": 2, "factor": 2.0})
    rcpt_domain = f"r{uuid.uuid4().hex[:8]}.example"
    dns_server.add(rcpt_domain, "MX", f"10 mx.{rcpt_domain}.")
    dns_server.add(f"mx.{rcpt_domain}", "A", peer.host)
    settings = dataclasses.replace(runtime.settings, plugins={"relay": {
        "spool_dir": str(tmp_path / "spool")}})
    prefix = f"{run_id}:relay:{uuid.uuid4().hex[:6]}"
    relay = relay_factory(
        peer.port, settings=settings,
        throttle=lambda config: RedisShaper(dataclasses.replace(config, redis_prefix=prefix),
                                            redis.asyncio.Redis.from_url(redis_url)))

    async def scenario() -> None:
        ids = [spool_message(settings, raw=_message(domain, f"u{i}@{rcpt_domain}"),
                             envelope_from=f"b@{domain}", recipients=[f"u{i}@{rcpt_domain}"],
                             tenant_id=tenant_a.id) for i in range(4)]
        await relay.start()
        try:
            relay.notify(ids)
            await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert len(peer.messages) == 2  # the tenant's plan: 2 per hour on day 0
    plans = [e.warmup_plan for e in relay.envelopes.values()]
    assert plans == [{"start_per_hour": 2, "factor": 2.0}] * 2


def test_campaign_mail_keeps_its_per_domain_return_path_with_a_bounce_domain_set(  # type: ignore[no-untyped-def]
    runtime, tenant_a, dns_server, peers, relay_factory, sending_domain, ledger_row, tmp_path,
) -> None:
    # Regression: with bounce_domain set, the relay replaced the renderer's
    # b+TOKEN@bounces.<sending domain> with VERP on bounce_domain, so SPF no longer
    # aligned with the From domain.
    from swiftmail_relay import verp

    (peer,) = peers(1, first=42)
    domain = sending_domain(tenant_a.id, f"s{uuid.uuid4().hex[:8]}.example")
    rcpt_domain = f"r{uuid.uuid4().hex[:8]}.example"
    dns_server.add(rcpt_domain, "MX", f"10 mx.{rcpt_domain}.")
    dns_server.add(f"mx.{rcpt_domain}", "A", peer.host)
    to = f"user@{rcpt_domain}"
    ledger_id = ledger_row(tenant_a.id, to)
    secret = runtime.settings.secret_key
    settings, relay = _setup(runtime, relay_factory, peer, tmp_path)

    async def scenario() -> None:
        await relay.start()
        try:
            relay.notify([spool_message(
                settings, raw=_message(domain, to), recipients=[to], tenant_id=tenant_a.id,
                envelope_from=verp.encode(secret, tenant_a.id, ledger_id, f"bounces.{domain}"),
                ledger_ids=[ledger_id])])
            await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (received,) = peer.messages
    assert received.mail_from == verp.encode(secret, tenant_a.id, ledger_id, f"bounces.{domain}")
    headers = received.data.split(b"\r\n\r\n")[0]
    assert headers.count(b"\r\nReceived: by localhost (SwiftMail) with local id ") == 1


def test_the_return_path_of_each_kind_of_mail(runtime, tenant_a, relay_factory) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay import verp
    from swiftmail_relay.spool import Envelope, Recipient

    secret = runtime.settings.secret_key
    recipient = Recipient("user@example.net", ledger_id=7)

    def path(relay, **fields) -> str:  # type: ignore[no-untyped-def]
        envelope = Envelope(id="q", recipients=[recipient], tenant_id=str(tenant_a.id), **fields)
        return relay.return_path(envelope, recipient)

    campaign = verp.encode(secret, tenant_a.id, 0, "bounces.news.example")
    for bounce_domain in ("bounce.relay.test", ""):
        relay = relay_factory(1, settings=runtime.settings, bounce_domain=bounce_domain)
        # The renderer's per-domain VERP keeps its domain, encoded for the recipient's row.
        assert path(relay, mail_from=campaign) == verp.encode(
            secret, tenant_a.id, 7, "bounces.news.example")
        assert path(relay, mail_from="", source="submission") == ""
        assert path(relay, mail_from="a@news.example", source="dsn") == ""
    relay = relay_factory(1, settings=runtime.settings, bounce_domain="bounce.relay.test")
    assert path(relay, mail_from="app@news.example", source="submission",
                return_path_domain="bounces.news.example") == verp.encode(
        secret, tenant_a.id, 7, "bounces.news.example")
    assert path(relay, mail_from="app@news.example", source="submission") == verp.encode(
        secret, tenant_a.id, 7, "bounce.relay.test")
    relay = relay_factory(1, settings=runtime.settings)
    assert path(relay, mail_from="app@news.example", source="submission",
                return_path_domain="bounces.news.example") == "app@news.example"
