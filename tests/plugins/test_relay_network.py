"""The relay transport's network mode: relays over HTTP, failover, unknown outcomes."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from swiftmail_plugins.relay_transport import (
    RelayHandoffTransport,
    RelayNetworkTransport,
    build,
)
from swiftmail_plugins.smtp_transport import SmtpTransport
from swiftmail_relay import spool as spool_module
from swiftmail_relay.intake_client import relay_url
from swiftmail_relay.spool_lock import SpoolLock

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.smtp_sink import free_port
from tests.core.sending.conftest import (
    add_subscribers,
    ledger_counts,
    make_campaign,
    make_list,
    park_other_tenants_work,
)
from tests.relay.intake_helpers import FlakyIntakeProxy, IntakeThread

ROOT = Path(__file__).resolve().parents[2]


def test_modes_and_relay_addresses(settings) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(build(settings, {}), RelayNetworkTransport)
    assert isinstance(build(settings, {"mode": "handoff"}), RelayHandoffTransport)
    assert isinstance(build(settings, {"mode": "smtp"}), SmtpTransport)
    for bad in ({"mode": "carrier-pigeon"}, {"relays": ""}, {"relays": "relay1:http"}):
        with pytest.raises(ConfigurationError):
            build(settings, bad)
    assert relay_url("10.0.0.2") == "http://10.0.0.2:2526"
    assert relay_url("10.0.0.2:9000") == "http://10.0.0.2:9000"
    assert relay_url("[::1]:9000") == "http://[::1]:9000"
    assert relay_url("::1") == "http://[::1]:2526"
    assert relay_url("https://relay1.example:2526/") == "https://relay1.example:2526"


def _closed_port() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens: connection refused


def _campaign(tenant_id, count: int, start: int = 0):  # type: ignore[no-untyped-def]
    first = make_list(tenant_id)
    add_subscribers(tenant_id, first, count, start=start)
    return make_campaign(tenant_id, [first], transport="relay")


def _resend_targets(tenant_id, campaign_id):  # type: ignore[no-untyped-def]
    from swiftmail_core.db import system_tx

    with system_tx() as database:
        return {row[0] for row in database.execute_sql(
            "SELECT resend_to FROM messages WHERE tenant_id = %s AND campaign_id = %s",
            (str(tenant_id), str(campaign_id))).fetchall()}


def _send(settings, tenant_id, campaign_id, options):  # type: ignore[no-untyped-def]
    configured = dataclasses.replace(settings, plugins={"relay_transport": options})
    plugins = PluginManager.load(configured)
    transport = plugins.transport("relay")
    transport.pool._turn = itertools.count(0)  # the listed order, for a deterministic test
    lifecycle.schedule_campaign(tenant_id, campaign_id)
    sweeper.tick(configured, plugins)
    park_other_tenants_work(tenant_id)
    SendingWorker(configured, plugins).drain(30)
    transport.close()
    return transport


def test_a_down_relay_fails_over_to_the_next(settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    campaign_id = _campaign(tenant_a.id, 12)
    with IntakeThread(settings, tmp_path / "second") as second:
        _send(settings, tenant_a.id, campaign_id,
              {"relays": [_closed_port(), second.address], "max_request_bytes": 20000})
        spooled = [second.spool.read(queue_id) for queue_id in second.spool.scan()]
    assert ledger_counts(tenant_a.id, campaign_id) == {"accepted": 12}
    assert len(spooled) == 12
    assert all(env.tenant_id == str(tenant_a.id) and env.campaign_id == str(campaign_id)
               and env.recipients[0].ledger_id for env, _ in spooled)


def test_a_relay_whose_spool_refuses_hands_over_to_the_next(settings, runtime, tenant_a,
                                                            tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class FullSpool(spool_module.Spool):
        def stage(self, items):  # type: ignore[no-untyped-def]
            raise spool_module.SpoolError("spool cannot write: No space left", no_space=True)

    campaign_id = _campaign(tenant_a.id, 5, start=50)
    with IntakeThread(settings, tmp_path / "full", spool=FullSpool(tmp_path / "full")) as full, \
            IntakeThread(settings, tmp_path / "ok") as healthy:
        _send(settings, tenant_a.id, campaign_id, {"relays": [full.address, healthy.address]})
        assert len(list(healthy.spool.scan())) == 5
    assert ledger_counts(tenant_a.id, campaign_id) == {"accepted": 5}


def test_an_answer_lost_after_sending_is_never_resent_elsewhere(settings, runtime, tenant_a,
                                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    campaign_id = _campaign(tenant_a.id, 4, start=80)
    lossy = FlakyIntakeProxy(None, [])
    address = lossy.address
    try:
        with IntakeThread(settings, tmp_path / "second") as second:
            _send(settings, tenant_a.id, campaign_id, {"relays": [lossy.address, second.address]})
            assert list(second.spool.scan()) == []  # not resent to another relay
    finally:
        lossy.stop()
    assert len(lossy.seen) == 1
    # Waiting to go to the same relay again (it drops what it already has), only there.
    assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 4}
    assert _resend_targets(tenant_a.id, campaign_id) == {relay_url(address)}


def test_an_error_after_an_accepted_chunk_never_resends_that_chunk(
        settings, runtime, tenant_a, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: an unexpected error on a later request of a batch propagated, the worker
    # deferred the whole batch and sent the already accepted first request again.
    from swiftmail_relay.intake_client import RelayPool

    real_post, calls = RelayPool.post, []

    def post(self, body, only=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("unexpected")
        return real_post(self, body, only=only)

    monkeypatch.setattr(RelayPool, "post", post)
    campaign_id = _campaign(tenant_a.id, 12, start=120)
    with IntakeThread(settings, tmp_path / "only") as only:
        _send(settings, tenant_a.id, campaign_id,
              {"relays": [only.address], "max_request_bytes": 20000})
        spooled = len(list(only.spool.scan()))
    counts = ledger_counts(tenant_a.id, campaign_id)
    assert len(calls) >= 2 and spooled > 0
    assert counts.get("accepted") == spooled  # nothing accepted was released to send again
    assert counts.get("unknown", 0) > 0


def test_no_relay_at_all_defers_the_batch(settings, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    campaign_id = _campaign(tenant_a.id, 3, start=90)
    _send(settings, tenant_a.id, campaign_id, {"relays": [_closed_port(), _closed_port()]})
    assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 3}


def test_handoff_without_a_local_relay_is_refused(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Regression: with the relay on another host, hand-off stranded every message in the
    # worker host's spool while `doctor` only warned.
    spool = tmp_path / "spool"
    configured = dataclasses.replace(settings, plugins={
        "relay": {"spool_dir": str(spool)},
        "relay_transport": {"mode": "handoff", "handoff_wait": "0.3"}})
    plugins = PluginManager.load(configured)

    def finding():  # type: ignore[no-untyped-def]
        (found,) = [f for f in PluginManager.load(configured).doctor_checks()
                    if f.check.startswith("relay transport")]
        return found

    stranded = finding()
    assert not stranded.ok and not stranded.warning and "mode = \"network\"" in stranded.detail
    with pytest.raises(ConfigurationError, match="no `swiftmail relay run` delivers"):
        plugins.transport("relay").preflight()
    lock = SpoolLock(spool).acquire()
    try:
        assert finding().ok
        plugins.transport("relay").preflight()
    finally:
        lock.release()


def test_the_worker_refuses_to_start_with_a_stranding_handoff(test_environ, targets,
                                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    environ = {**os.environ, **test_environ,
               "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
               "SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE": "handoff",
               "SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_HANDOFF_WAIT": "0.2"}
    result = subprocess.run([sys.executable, "-m", "swiftmail_core.cli", "worker"], cwd=ROOT,
                            env=environ, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert "no `swiftmail relay run` delivers" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_warns_about_unreachable_network_relays(settings) -> None:  # type: ignore[no-untyped-def]
    configured = dataclasses.replace(settings, plugins={"relay_transport": {
        "relays": [_closed_port()]}})
    (found,) = [f for f in PluginManager.load(configured).doctor_checks()
                if f.check.startswith("relay transport")]
    assert not found.ok and found.warning and "not reachable" in found.detail


def test_doctor_says_when_a_relay_listed_as_http_speaks_tls(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Plain HTTP to a TLS intake: the intake drops the request unread, which a worker
    # cannot tell from a lost answer (the rows would become 'unknown'); doctor can.
    from tests.relay.tls_peers import Pki

    chain, key, _ = Pki().issue(tmp_path, "localhost")
    with IntakeThread(settings, tmp_path / "spool", intake_tls=True, tls_cert=str(chain),
                      tls_key=str(key)) as secure, \
            IntakeThread(settings, tmp_path / "plain") as plain:
        def finding(relays):  # type: ignore[no-untyped-def]
            configured = dataclasses.replace(settings, plugins={"relay_transport": {
                "relays": relays}})
            (found,) = [f for f in PluginManager.load(configured).doctor_checks()
                        if f.check.startswith("relay transport")]
            return found

        assert finding([plain.address]).ok
        found = finding([plain.address, secure.address])
        assert not found.ok and found.warning
        assert f"https://{secure.address}" in found.detail and plain.address not in found.detail


def test_relays_over_tls_need_their_ca(settings, runtime, tenant_a, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.relay.tls_peers import Pki

    pki = Pki()
    chain, key, _ = pki.issue(tmp_path, "localhost")
    ca_file = pki.write_ca(tmp_path / "ca.pem")
    with IntakeThread(settings, tmp_path / "spool", intake_tls=True, tls_cert=str(chain),
                      tls_key=str(key)) as secure:
        url = f"https://localhost:{secure.server.address[1]}"
        untrusted = _campaign(tenant_a.id, 2, start=200)
        # Not trusted: the handshake fails before a byte of the request, so the batch waits
        # (deferred), never 'unknown'.
        _send(settings, tenant_a.id, untrusted, {"relays": [url]})
        assert ledger_counts(tenant_a.id, untrusted) == {"deferred": 2}
        trusted = _campaign(tenant_a.id, 3, start=300)
        _send(settings, tenant_a.id, trusted, {"relays": [url], "ca_file": str(ca_file)})
        assert ledger_counts(tenant_a.id, trusted) == {"accepted": 3}
        assert len(list(secure.spool.scan())) == 3


def test_https_to_a_plain_intake_waits_instead_of_becoming_unknown(settings, runtime, tenant_a,
                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The intake speaks plain HTTP: the TLS handshake fails before a byte of the request,
    # so nothing was sent (the next relay may take it; alone, the batch waits).
    with IntakeThread(settings, tmp_path / "spool") as plain:
        url = f"https://127.0.0.1:{plain.server.address[1]}"
        rows = _campaign(tenant_a.id, 2, start=400)
        _send(settings, tenant_a.id, rows, {"relays": [url]})
        assert ledger_counts(tenant_a.id, rows) == {"deferred": 2}
        assert list(plain.spool.scan()) == []


def test_an_unknown_outcome_settles_when_the_relay_delivers(settings, runtime, tenant_a,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import functools

    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.engine import Relay
    from swiftmail_relay.outcomes import record_outcomes
    from swiftmail_relay.sink import OutcomeSink

    from swiftmail_core.testing.smtp_sink import SmtpSink

    campaign_id = _campaign(tenant_a.id, 5, start=400)
    with IntakeThread(settings, tmp_path / "spool") as intake:
        proxy = FlakyIntakeProxy(intake.address, [], then="spooled")
        try:
            _send(settings, tenant_a.id, campaign_id, {"relays": [proxy.address]})
        finally:
            proxy.stop()
    assert proxy.forwarded == 1
    assert ledger_counts(tenant_a.id, campaign_id) == {"deferred": 5}  # to this relay only
    with SmtpSink() as sink:
        config = RelayConfig.from_settings(
            settings, spool_dir=str(tmp_path / "spool"), relayhost="127.0.0.1",
            smtp_port=sink.port, allow_networks="127.0.0.0/8", warmup=False,
            scan_interval=0.1, hostname="relay.test")
        plugins = PluginManager.load(settings)
        relay = Relay(settings, config, sink=OutcomeSink(
            functools.partial(record_outcomes, plugins=plugins)))

        async def deliver() -> None:
            await relay.start()
            try:
                await relay.idle(30)
            finally:
                await relay.stop()

        asyncio.run(deliver())
        assert sink.handler.count() == 5
    assert ledger_counts(tenant_a.id, campaign_id) == {"delivered": 5}


def test_doctor_warns_about_rows_pinned_to_a_relay_neither_listed_nor_moved(
        settings, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.db import tenant_tx

    listed, moved, to, gone = (_closed_port() for _ in range(4))
    pinned = [(listed, "deferred"), (moved, "deferred"), (gone, "deferred"), (gone, "deferred"),
              (gone, "unknown"), (gone, "delivered"), (to, "unknown")]
    with tenant_tx(tenant_a.id) as database:
        for index, (relay, status) in enumerate(pinned):
            database.execute_sql(
                "INSERT INTO messages (tenant_id, email, kind, transport, status, resend_to) "
                "VALUES (%s, %s, 'transactional', 'relay', %s, %s)",
                (str(tenant_a.id), f"pinned{index}@example.test", status, relay_url(relay)))

    def finding(**options):  # type: ignore[no-untyped-def]
        configured = dataclasses.replace(settings, plugins={"relay_transport": options})
        (found,) = [f for f in PluginManager.load(configured).doctor_checks()
                    if f.check.startswith("resends wait")]
        return found

    found = finding(relays=[listed, to], moved_relays={moved: to})
    assert not found.ok and found.warning
    assert f"{relay_url(gone)}: 2 deferred, 1 unknown" in found.detail
    assert "moved_relays" in found.detail
    for known in (listed, moved, to):
        assert relay_url(known) not in found.detail
    # Moved (after a reinject) or listed again, the rows have somewhere to go.
    assert relay_url(gone) not in finding(relays=[listed, to],
                                          moved_relays={moved: to, gone: to}).detail
    assert relay_url(gone) not in finding(relays=[listed, gone],
                                          moved_relays=f"{moved}={to},{to}={listed}").detail
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("DELETE FROM messages WHERE tenant_id = %s AND email LIKE 'pinned%%'",
                             (str(tenant_a.id),))
