"""A hand-off whose answer was lost is resent to the same relay, which drops what it has."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools

from swiftmail_relay.config import RelayConfig
from swiftmail_relay.engine import Relay
from swiftmail_relay.intake_client import relay_url
from swiftmail_relay.outcomes import record_outcomes
from swiftmail_relay.sink import OutcomeSink

from swiftmail_core.db import system_tx
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.smtp_sink import SmtpSink
from tests.core.sending.conftest import ledger_counts, park_other_tenants_work
from tests.plugins.test_relay_network import _campaign, _resend_targets, _send
from tests.relay.intake_helpers import FlakyIntakeProxy, IntakeThread


def _drain_again(settings, tenant_id, options):  # type: ignore[no-untyped-def]
    """Let the backoff pass and run the worker once more with ``options``."""
    configured = dataclasses.replace(settings, plugins={"relay_transport": options})
    plugins = PluginManager.load(configured)
    transport = plugins.transport("relay")
    transport.pool._turn = itertools.count(0)
    with system_tx() as database:
        database.execute_sql("UPDATE messages SET next_attempt_at = now() WHERE tenant_id = %s "
                             "AND status = 'deferred'", (str(tenant_id),))
    sweeper.tick(configured, plugins)
    park_other_tenants_work(tenant_id)
    SendingWorker(configured, plugins).drain(30)
    transport.close()


def _deliver(settings, spool_dir, sink):  # type: ignore[no-untyped-def]
    config = RelayConfig.from_settings(
        settings, spool_dir=str(spool_dir), relayhost="127.0.0.1", smtp_port=sink.port,
        allow_networks="127.0.0.0/8", warmup=False, scan_interval=0.1, hostname="relay.test")
    relay = Relay(settings, config, sink=OutcomeSink(
        functools.partial(record_outcomes, plugins=PluginManager.load(settings))))

    async def run() -> None:
        await relay.start()
        try:
            await relay.idle(30)
        finally:
            await relay.stop()

    asyncio.run(run())


def test_lost_answers_are_resent_to_the_same_relay_and_delivered_exactly_once(
        settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Regression: a batch whose answer was lost (the relay killed mid-request) stayed
    # 'unknown' for good: when the relay had not spooled it yet, nobody got the mail and
    # the rows expired after 72 h. Now it is resent to that relay, which drops repeats.
    campaign_id = _campaign(tenant_a.id, 10, start=700)
    with IntakeThread(settings, tmp_path / "spool") as intake, \
            IntakeThread(settings, tmp_path / "other") as other:
        proxy = FlakyIntakeProxy(intake.address, ["spooled"])
        try:
            _send(settings, tenant_a.id, campaign_id,
                  {"relays": [proxy.address], "max_request_bytes": 20000})
            assert proxy.seen[0] == "spooled" and "lost" in proxy.seen
            spooled_before = len(list(intake.spool.scan()))
            assert 0 < spooled_before < 10
            assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 10}
            assert _resend_targets(tenant_a.id, campaign_id) == {relay_url(proxy.address)}

            # Still down: the resend goes nowhere else, the rows keep waiting for it.
            _drain_again(settings, tenant_a.id, {"relays": [other.address, proxy.address]})
            assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 10}
            assert list(other.spool.scan()) == []

            proxy.recover()  # the relay is back
            _drain_again(settings, tenant_a.id, {"relays": [other.address, proxy.address],
                                                 "max_request_bytes": 20000})
        finally:
            proxy.stop()
        assert ledger_counts(tenant_a.id, campaign_id) == {"accepted": 10}
        assert list(other.spool.scan()) == []  # never to another relay
        assert len(list(intake.spool.scan())) == 10  # the repeats were not spooled twice
    with SmtpSink() as sink:
        _deliver(settings, tmp_path / "spool", sink)
        assert sink.handler.count() == 10
        assert set(sink.handler.per_recipient.values()) == {1}  # each exactly once
    assert ledger_counts(tenant_a.id, campaign_id) == {"delivered": 10}


def test_resending_stops_after_the_configured_time(settings, runtime, tenant_a,
                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    campaign_id = _campaign(tenant_a.id, 3, start=760)
    with IntakeThread(settings, tmp_path / "spool") as intake:
        proxy = FlakyIntakeProxy(intake.address, [])
        try:
            _send(settings, tenant_a.id, campaign_id, {"relays": [proxy.address]})
            assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 3}
            with system_tx() as database:  # the relay stayed unreachable all that time
                database.execute_sql(
                    "UPDATE messages SET resend_until = now() - interval '1 second' "
                    "WHERE tenant_id = %s AND campaign_id = %s",
                    (str(tenant_a.id), str(campaign_id)))
            _drain_again(settings, tenant_a.id, {"relays": [proxy.address]})
        finally:
            proxy.stop()
    # As before the resends: unknown, and expired by the sweeper after
    # send_unknown_outcome_hours unless the relay's report settles them first.
    assert ledger_counts(tenant_a.id, campaign_id) == {"unknown": 3}


def test_resends_follow_a_spool_moved_by_reinject(settings, runtime, tenant_a,
                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay import spool_move

    campaign_id = _campaign(tenant_a.id, 6, start=800)
    with IntakeThread(settings, tmp_path / "dead") as dead:
        proxy = FlakyIntakeProxy(dead.address, ["spooled"])
        try:
            _send(settings, tenant_a.id, campaign_id,
                  {"relays": [proxy.address], "max_request_bytes": 8000})
        finally:
            proxy.stop()
        taken = len(list(dead.spool.scan()))
    assert 0 < taken < 6 and ledger_counts(tenant_a.id, campaign_id) == {"deferred": 6}
    # The host will not return: the operator moves its spool into a live relay and
    # points resends meant for it there.
    with IntakeThread(settings, tmp_path / "live") as live:
        spool_move.reinject(tmp_path / "dead", live.spool)
        _drain_again(settings, tenant_a.id, {
            "relays": [live.address], "max_request_bytes": 8000,
            "moved_relays": {proxy.address: live.address}})
        assert len(list(live.spool.scan())) == 6  # each row once
    assert ledger_counts(tenant_a.id, campaign_id) == {"accepted": 6}


def test_a_batch_no_relay_took_counts_as_failed_even_with_resends_in_it(
        settings, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: when a batch carried resends pinned to a relay, a failure of every relay
    # for the rest of the batch was swallowed and counted as a success, so campaigns were
    # never paused while all relays were down (their fresh rows used up their attempts).
    from swiftmail_core.sending import lifecycle
    from tests.plugins.test_relay_network import _closed_port

    campaign_id = _campaign(tenant_a.id, 4, start=300)
    down = [_closed_port(), _closed_port()]
    configured = dataclasses.replace(settings, send_pause_after_failures=1,
                                     plugins={"relay_transport": {"relays": down}})
    plugins = PluginManager.load(configured)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    sweeper.tick(configured, plugins)
    park_other_tenants_work(tenant_a.id)
    with system_tx() as database:  # two rows wait for a resend to the first (down) relay
        database.execute_sql(
            "UPDATE messages SET resend_to = %s WHERE tenant_id = %s AND id IN (SELECT id "
            "FROM messages WHERE tenant_id = %s AND campaign_id = %s ORDER BY id LIMIT 2)",
            (relay_url(down[0]), str(tenant_a.id), str(tenant_a.id), str(campaign_id)))
    SendingWorker(configured, plugins).drain(30)
    plugins.transport("relay").close()
    assert ledger_counts(tenant_a.id, campaign_id) == {"held": 4}
    assert _resend_targets(tenant_a.id, campaign_id) == {relay_url(down[0]), None}
