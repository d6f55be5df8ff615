"""The bounce/feedback listener and DSNs the relay generates."""

from __future__ import annotations

import asyncio
import functools
import uuid

import aiosmtplib
import pytest
from swiftmail_relay import verp
from swiftmail_relay.bounces import BounceHandler
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.outcomes import record_outcomes
from swiftmail_relay.spool import Envelope, Recipient, new_id
from swiftmail_relay.submission import make_smtp_factory

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Event, Suppression

BOUNCE_DOMAIN = "bounce.relay.test"
FBL = "fbl@relay.test"


def _dsn(recipient: str, return_path: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example\r\nTo: <{return_path}>\r\nSubject: failure\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <{return_path}>\r\nSubject: hi\r\n\r\n--b--\r\n"
    ).encode()


def _arf(recipient: str, return_path: str) -> bytes:
    return (
        "From: fbl@isp.example\r\nTo: fbl@relay.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        f"User-Agent: isp/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n\r\n"
        f"--b\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{return_path}>\r\nFrom: news@x.example\r\n"
        f"To: {recipient}\r\nSubject: hi\r\n\r\nbody\r\n--b--\r\n"
    ).encode()


@pytest.fixture
def bounce_listener(runtime, tmp_path):  # type: ignore[no-untyped-def]
    """Run a scenario against the bounce listener on a random loopback port."""

    def run(scenario, *, bounce_domain: str = BOUNCE_DOMAIN, record=None):  # type: ignore[no-untyped-def]
        config = RelayConfig.from_settings(runtime.settings, spool_dir=str(tmp_path / "spool"),
                                           bounce_domain=bounce_domain, fbl_address=FBL)
        handler = BounceHandler(runtime.settings, config, record or functools.partial(
            record_outcomes, plugins=runtime.plugins))
        factory = make_smtp_factory(handler, config, trusted=True, tls_context=None)

        async def main():  # type: ignore[no-untyped-def]
            server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
                await client.connect()
                return await scenario(client)
            finally:
                server.close()

        return asyncio.run(main())

    return run


def test_the_bounce_listener_offers_no_auth(bounce_listener) -> None:  # type: ignore[no-untyped-def]
    """Regression: port 25 advertised AUTH PLAIN LOGIN in clear text (nothing could pass it)."""

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.ehlo()
        assert not client.supports_extension("auth")
        refused = await client.execute_command(b"AUTH", b"PLAIN", b"AGZvbwBiYXI=")
        assert refused.code >= 500, refused

    bounce_listener(scenario)


def test_only_verp_and_fbl_are_accepted(bounce_listener, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    good = verp.encode(runtime.settings.secret_key, tenant_a.id, 7, BOUNCE_DOMAIN)
    forged = good.replace(good[2:6], "aaaa")

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.mail("")
        for address in ("postmaster@relay.test", forged, f"b+x@{BOUNCE_DOMAIN}", "x@elsewhere.example"):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
                await client.rcpt(address)
            assert caught.value.code == 550
        assert (await client.rcpt(good)).code == 250
        assert (await client.rcpt(FBL)).code == 250

    bounce_listener(scenario)


def test_verp_on_a_sending_domains_return_path_is_accepted(bounce_listener, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    """Campaign mail's VERP lives on bounces.<sending domain>: the token is the proof."""
    from swiftmail_core.rendering import verp_return_path

    address = verp_return_path("bounces.tenant-a.example", tenant_a.id, 42,
                               runtime.settings.secret_key)
    forged = address.replace(address[2:6], "aaaa")

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.mail("")
        assert (await client.rcpt(address)).code == 250
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await client.rcpt(forged)
        assert caught.value.code == 550

    bounce_listener(scenario)


def test_dsn_to_verp_records_hard_bounce(bounce_listener, runtime, tenant_a, ledger_row) -> None:  # type: ignore[no-untyped-def]
    email = f"gone{uuid.uuid4().hex[:6]}@example.net"
    ledger_id = ledger_row(tenant_a.id, email)
    address = verp.encode(runtime.settings.secret_key, tenant_a.id, ledger_id, BOUNCE_DOMAIN)

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.sendmail("", [address], _dsn(email, address))

    bounce_listener(scenario)
    with tenant_tx(tenant_a.id):
        events = list(Event.select().where(Event.message_id == ledger_id))
        suppressed = [s.reason for s in Suppression.select().where(Suppression.email_lower == email)]
    assert [(e.type, e.bounce_class) for e in events] == [("bounced", "hard")]
    assert suppressed == ["hard_bounce"]


def test_arf_complaint_suppresses(bounce_listener, runtime, tenant_a, ledger_row) -> None:  # type: ignore[no-untyped-def]
    email = f"angry{uuid.uuid4().hex[:6]}@example.net"
    ledger_id = ledger_row(tenant_a.id, email)
    address = verp.encode(runtime.settings.secret_key, tenant_a.id, ledger_id, BOUNCE_DOMAIN)

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.sendmail("fbl@isp.example", [FBL], _arf(email, address))

    bounce_listener(scenario)
    with tenant_tx(tenant_a.id):
        events = [e.type for e in Event.select().where(Event.message_id == ledger_id)]
        suppressed = [s.reason for s in Suppression.select().where(Suppression.email_lower == email)]
    assert events == ["complained"] and suppressed == ["complaint"]


def test_submission_bounce_generates_dsn_to_reverse_path(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, tmp_path
) -> None:
    (peer,) = peers(1, first=50)
    domain = f"r{uuid.uuid4().hex[:8]}.example"
    peer.rcpt = lambda address: ("550 5.1.1 no such user" if address.startswith("gone")
                                 else "250 2.1.5 ok")
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port)

    async def scenario() -> None:
        await relay.start()
        try:
            envelope = Envelope(id=new_id(), mail_from=f"app@{domain}",
                                recipients=[Recipient(f"gone@{domain}")], source="submission")
            relay.notify([relay.spool.write(envelope, b"From: app@x\r\nSubject: s\r\n\r\nbody\r\n")])
            envelope = Envelope(id=new_id(), mail_from="",
                                recipients=[Recipient(f"gone2@{domain}")], source="submission")
            relay.notify([relay.spool.write(envelope, b"From: app@x\r\nSubject: s\r\n\r\nbody\r\n")])
            for _ in range(500):
                if len(relay.finals) >= 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (dsn,) = peer.messages  # one DSN; none for the null reverse path
    assert dsn.mail_from == "" and dsn.recipients == [f"app@{domain}"]
    assert b"message/delivery-status" in dsn.data and b"Status: 5.1.1" in dsn.data




def test_list_unsubscribe_mailto_unsubscribes(bounce_listener, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    """The mailto: of List-Unsubscribe: Subject unsubscribe-<signed token>."""
    from swiftmail_core.db import app_db, tenant_tx
    from swiftmail_core.tokens import make_unsubscribe_token
    from tests.core.sending.conftest import add_subscribers, make_list

    list_id = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, list_id, 1, domain="mailto.test")
    with tenant_tx(tenant_a.id):
        contact_id = app_db.execute_sql(
            "SELECT id FROM contacts WHERE email = 'user0@mailto.test'").fetchone()[0]
    token = make_unsubscribe_token(runtime.settings.secret_key, tenant_a.id, contact_id, list_id)

    def mail(subject: str) -> bytes:
        return (f"From: user0@mailto.test\r\nTo: unsubscribe@{BOUNCE_DOMAIN}\r\n"
                f"Subject: {subject}\r\n\r\n\r\n").encode()

    async def scenario(client):  # type: ignore[no-untyped-def]
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.sendmail("user0@mailto.test", [f"unsubscribe@{BOUNCE_DOMAIN}"],
                                  mail(f"unsubscribe-{forged}"))
        assert caught.value.code == 550
        await client.sendmail("user0@mailto.test", [f"unsubscribe@{BOUNCE_DOMAIN}"],
                              mail(f"unsubscribe-{token}"))

    bounce_listener(scenario)
    with tenant_tx(tenant_a.id):
        status = app_db.execute_sql(
            "SELECT status FROM subscriptions WHERE list_id = %s", (str(list_id),)).fetchone()[0]
    assert status == "unsubscribed"


def test_bounces_on_every_tenants_return_path_domain_are_taken_without_a_bounce_domain(  # type: ignore[no-untyped-def]
    bounce_listener, runtime, tenant_a, ledger_row
) -> None:
    # Regression: with no global bounce_domain set the listener refused every VERP
    # address, so bounces to bounces.<sending domain> were lost.
    email = f"gone{uuid.uuid4().hex[:6]}@example.net"
    ledger_id = ledger_row(tenant_a.id, email)
    address = verp.encode(runtime.settings.secret_key, tenant_a.id, ledger_id,
                          "bounces.tenant-a.example")

    async def scenario(client):  # type: ignore[no-untyped-def]
        await client.sendmail("", [address], _dsn(email, address))

    bounce_listener(scenario, bounce_domain="")
    with tenant_tx(tenant_a.id):
        events = [e.type for e in Event.select().where(Event.message_id == ledger_id)]
    assert events == ["bounced"]


def test_a_report_received_twice_counts_once(bounce_listener, runtime, tenant_a, ledger_row) -> None:  # type: ignore[no-untyped-def]
    # Regression: the key was a hash of the whole message, so a copy with another
    # trace field (another route, or a resend after a lost reply) counted again.
    bounced = f"gone{uuid.uuid4().hex[:6]}@example.net"
    angry = f"angry{uuid.uuid4().hex[:6]}@example.net"
    bounce_row, complaint_row = ledger_row(tenant_a.id, bounced), ledger_row(tenant_a.id, angry)
    bounce_to = verp.encode(runtime.settings.secret_key, tenant_a.id, bounce_row, BOUNCE_DOMAIN)
    complaint_return = verp.encode(runtime.settings.secret_key, tenant_a.id, complaint_row,
                                   BOUNCE_DOMAIN)

    async def scenario(client):  # type: ignore[no-untyped-def]
        for hop in ("mx1", "mx2"):
            trace = f"Received: from {hop}.isp.example by relay.test; Sat, 5 Dec 2026 10:00:00 +0000\r\n"
            await client.sendmail("", [bounce_to], trace.encode() + _dsn(bounced, bounce_to))
            await client.sendmail("fbl@isp.example", [FBL],
                                  trace.encode() + _arf(angry, complaint_return))

    bounce_listener(scenario)
    with tenant_tx(tenant_a.id):
        events = sorted((e.message_id, e.type) for e in Event.select().where(
            Event.message_id.in_([bounce_row, complaint_row])))
    assert events == sorted([(bounce_row, "bounced"), (complaint_row, "complained")])


def test_reports_are_parsed_off_the_event_loop(bounce_listener, runtime, tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: a report of up to 25 MiB was parsed on the loop, stalling every session.
    import threading

    from swiftmail_relay import bounces

    release = threading.Event()
    order: list[str] = []

    def slow_parse(raw):  # type: ignore[no-untyped-def]
        order.append("parse started")
        release.wait(10)
        order.append("parse done")
        return []

    monkeypatch.setattr(bounces, "parse_report", slow_parse)
    address = verp.encode(runtime.settings.secret_key, tenant_a.id, 1, BOUNCE_DOMAIN)

    async def scenario(client):  # type: ignore[no-untyped-def]
        sending = asyncio.create_task(client.sendmail("", [address], _dsn("x@example.net", address)))
        for _ in range(1000):
            if order:
                break
            await asyncio.sleep(0.01)
        other = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, start_tls=False, timeout=10)
        await other.connect()
        await other.ehlo()
        await other.noop()
        order.append("other session served")
        release.set()
        await sending
        await other.quit()

    bounce_listener(scenario)
    assert order == ["parse started", "other session served", "parse done"]


def test_a_permanent_failure_is_reported_while_another_recipient_is_still_deferred(  # type: ignore[no-untyped-def]
    dns_server, peers, relay_factory, tmp_path
) -> None:
    # Regression: the DSN for the permanent failure waited until the deferred recipient
    # was final too (up to max_age, 4 days).
    (peer,) = peers(1, first=51)
    domain = f"r{uuid.uuid4().hex[:8]}.example"
    tries = {"later": 0}

    def rcpt(address: str) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 no such user"
        if address.startswith("later"):
            tries["later"] += 1
            return "450 4.2.0 try again later"
        return "250 2.1.5 ok"

    peer.rcpt = rcpt
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port)

    def dsns() -> list:  # type: ignore[type-arg]
        return [m for m in peer.messages if m.mail_from == ""]

    async def scenario() -> None:
        await relay.start()
        try:
            envelope = Envelope(id=new_id(), mail_from=f"app@{domain}", source="submission",
                                recipients=[Recipient(f"gone@{domain}"), Recipient(f"later@{domain}")])
            relay.notify([relay.spool.write(envelope, b"From: app@x\r\nSubject: s\r\n\r\nbody\r\n")])
            for _ in range(500):
                if dsns() and tries["later"] >= 4:
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (dsn,) = dsns()  # once, not again on each retry of the deferred recipient
    assert dsn.recipients == [f"app@{domain}"]
    assert f"gone@{domain}".encode() in dsn.data and f"later@{domain}".encode() not in dsn.data
    assert tries["later"] >= 4
    assert [e.source for e in relay.finals] == ["dsn"]  # the message itself is still deferred


def test_a_stalled_database_leaves_the_shared_worker_threads_free(  # type: ignore[no-untyped-def]
    bounce_listener, runtime, tenant_a
) -> None:
    # Regression: report parsing and recording ran in the loop's default executor, which
    # the spool writes and deliveries share; enough stalled writes stalled them all.
    import os
    import threading

    release = threading.Event()
    started = threading.Semaphore(0)

    def stalled(outcomes):  # type: ignore[no-untyped-def]
        started.release()
        release.wait(10)

    sessions = min(32, (os.cpu_count() or 1) + 4) + 1
    address = verp.encode(runtime.settings.secret_key, tenant_a.id, 1, BOUNCE_DOMAIN)

    async def scenario(client):  # type: ignore[no-untyped-def]
        clients = []
        for _ in range(sessions):
            other = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, start_tls=False,
                                    timeout=20)
            await other.connect()
            clients.append(other)
        sends = [asyncio.create_task(c.sendmail("", [address], _dsn("x@example.net", address)))
                 for c in clients]
        for _ in range(1000):
            if started.acquire(blocking=False) or all(send.done() for send in sends):
                break
            await asyncio.sleep(0.01)
        try:
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        finally:
            release.set()
        await asyncio.gather(*sends)

    bounce_listener(scenario, record=stalled)
