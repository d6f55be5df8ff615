"""The relay transport: campaign mail handed to the relay's spool, delivered by the relay."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

from swiftmail_relay.config import RelayConfig
from swiftmail_relay.engine import Relay
from swiftmail_relay.outcomes import record_outcomes
from swiftmail_relay.sink import OutcomeSink
from swiftmail_relay.spool import Spool

from swiftmail_core.db import tenant_tx
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.dns import DnsServer
from swiftmail_core.testing.smtp_sink import SmtpSink
from tests.core.sending.conftest import (
    add_subscribers,
    make_campaign,
    make_list,
    park_other_tenants_work,
)

DOMAIN = "example.test"


async def _deliver(relay: Relay, expected: int, timeout: float = 60) -> None:
    await relay.start()
    deadline = time.monotonic() + timeout
    while relay.delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # let the outcome sink write
    await relay.stop()


def test_campaign_through_relay_handoff_is_delivered(settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first, second = make_list(tenant_a.id), make_list(tenant_a.id)
    add_subscribers(tenant_a.id, first, 12, start=0)
    add_subscribers(tenant_a.id, second, 12, start=6)
    campaign_id = make_campaign(tenant_a.id, [first, second], transport="relay")
    spool_dir = tmp_path / "spool"
    configured = dataclasses.replace(settings, plugins={"relay": {"spool_dir": str(spool_dir)},
                                                        "relay_transport": {"mode": "handoff"}})
    plugins = PluginManager.load(configured)
    worker = SendingWorker(configured, plugins)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    sweeper.tick(configured, plugins)
    park_other_tenants_work(tenant_a.id)
    assert worker.drain(30) == 18
    with tenant_tx(tenant_a.id) as database:
        accepted = database.execute_sql(
            "SELECT count(*) FROM messages WHERE campaign_id = %s AND status = 'accepted' "
            "AND provider_message_id IS NOT NULL", (str(campaign_id),)).fetchone()[0]
    assert accepted == 18

    dns = DnsServer().start()
    dns.add(DOMAIN, "MX", f"10 mx.{DOMAIN}.")
    dns.add(f"mx.{DOMAIN}", "A", "127.0.0.1")
    try:
        with SmtpSink() as sink:
            relay_settings = dataclasses.replace(
                configured, dns_nameservers=("127.0.0.1",), dns_port=dns.port)
            config = RelayConfig.from_settings(
                relay_settings, spool_dir=str(spool_dir), smtp_port=sink.port,
                allow_networks="127.0.0.0/8", scan_interval=0.1, hostname="relay.test",
                warmup=False)
            relay = Relay(relay_settings, config, sink=OutcomeSink(
                functools.partial(record_outcomes, plugins=plugins)))
            asyncio.run(_deliver(relay, 18))
            assert sorted(sink.handler.per_recipient) == sorted(
                f"user{i}@{DOMAIN}" for i in range(18))
            assert max(sink.handler.per_recipient.values()) == 1
            subjects = {m["To"]: str(m["Subject"]) for m in sink.handler.messages()}
            assert subjects[f"user9@{DOMAIN}"] == "Hello First9"
    finally:
        dns.stop()
    with tenant_tx(tenant_a.id) as database:
        statuses = dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
            (str(campaign_id),)).fetchall())
    assert statuses == {"delivered": 18}


def test_confirmation_rows_without_transport_go_through_the_relay(settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    configured = dataclasses.replace(settings, plugins={"relay": {"spool_dir": str(tmp_path / "s")},
                                                        "relay_transport": {"mode": "handoff"}})
    plugins = PluginManager.load(configured)
    with tenant_tx(tenant_a.id) as database:
        ledger_id = database.execute_sql(
            "INSERT INTO messages (tenant_id, email, kind, payload) VALUES (%s, 'new@example.test', "
            "'confirmation', %s::jsonb) RETURNING id",
            (str(tenant_a.id), '{"subject": "Please confirm", "text": "Confirm: https://x.test/c", '
             '"html": "", "from_email": "no-reply@sender.test", "from_name": "T", "data": {}}'),
        ).fetchone()[0]
    park_other_tenants_work(tenant_a.id)
    assert SendingWorker(configured, plugins).drain(10) == 1
    with tenant_tx(tenant_a.id) as database:
        status, transport_id = database.execute_sql(
            "SELECT status, provider_message_id FROM messages WHERE id = %s", (ledger_id,)).fetchone()
    assert status == "accepted" and transport_id


def test_smtp_mode_submits_to_the_relay_listener_with_an_api_key(settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading
    import uuid

    from swiftmail_relay import dkim
    from swiftmail_relay.submission import SubmissionHandler, make_smtp_factory

    from swiftmail_core import crypto
    from swiftmail_core.apikeys import create_api_key
    from swiftmail_core.testing.smtp_sink import free_port

    domain = f"s{uuid.uuid4().hex[:8]}.example"
    pem, public = dkim.generate_rsa_pem()
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql(
            "INSERT INTO sending_domains (tenant_id, domain, dkim_selector, "
            "dkim_private_key_encrypted, dkim_public_key, verified_at) "
            "VALUES (%s, %s, 'sm1', %s, %s, now())",
            (str(tenant_a.id), domain, crypto.encrypt(settings.secret_key, pem), public))
    key = create_api_key(tenant_a.id, role="editor").key
    port = free_port()
    relay_settings = dataclasses.replace(settings, plugins={"relay": {
        "spool_dir": str(tmp_path / "spool"), "trusted_listeners": f"127.0.0.1:{port}"}})
    config = RelayConfig.from_settings(relay_settings)
    handler = SubmissionHandler(relay_settings, config, runtime.plugins)
    factory = make_smtp_factory(handler, config, trusted=True, tls_context=None,
                                authenticator=handler.authenticate)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        first = make_list(tenant_a.id)
        add_subscribers(tenant_a.id, first, 6, start=100)
        campaign_id = make_campaign(tenant_a.id, [first], transport="relay",
                                    from_email=f"news@{domain}")
        configured = dataclasses.replace(settings, plugins={"relay_transport": {
            "mode": "smtp", "port": port, "username": "app", "password": key}})
        plugins = PluginManager.load(configured)
        lifecycle.schedule_campaign(tenant_a.id, campaign_id)
        sweeper.tick(configured, plugins)
        SendingWorker(configured, plugins).drain(30)
        plugins.transport("relay").close()  # QUIT the kept-alive connection
        time.sleep(0.2)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    spool = Spool(tmp_path / "spool")
    spooled = [spool.read(queue_id) for queue_id in spool.scan()]
    assert len(spooled) == 6
    assert all(env.tenant_id == str(tenant_a.id) and raw.startswith(b"DKIM-Signature:")
               for env, raw in spooled)
    assert ledger_statuses(tenant_a.id, campaign_id) == {"accepted": 6}


def ledger_statuses(tenant_id, campaign_id):  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
            (str(campaign_id),)).fetchall())
