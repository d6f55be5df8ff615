"""The submission listener: never an open relay, AUTH only under TLS, durable 250."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ssl
import threading
import uuid
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from swiftmail_relay.auth_failures import AuthFailures
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.spool import Spool, SpoolError
from swiftmail_relay.submission import (
    SubmissionHandler,
    header_problem,
    make_smtp_factory,
    tls_context,
)

from swiftmail_core.apikeys import create_api_key


def _certificate(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _message(domain: str, extra: str = "") -> bytes:
    return (f"From: App <app@{domain}>\r\nTo: user@example.com\r\nSubject: hi\r\n{extra}"
            f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\n\r\nbody\r\n").encode()


@pytest.fixture
def listener(runtime, tmp_path):  # type: ignore[no-untyped-def]
    """Factory: run a scenario against a submission listener (trusted or TLS)."""
    settings = dataclasses.replace(runtime.settings, plugins={"relay": {
        "spool_dir": str(tmp_path / "spool")}})

    def run(scenario, *, trusted: bool, **overrides):  # type: ignore[no-untyped-def]
        cert, key = _certificate(tmp_path)
        config = RelayConfig.from_settings(settings, tls_cert=cert, tls_key=key,
                                           max_message_size=overrides.pop("size", 100_000))
        auth_failures = overrides.pop("auth_failures", None)
        handler = SubmissionHandler(settings, config, runtime.plugins)
        for name, value in overrides.items():
            setattr(handler, name, value)
        factory = make_smtp_factory(handler, config, trusted=trusted,
                                    tls_context=tls_context(config),
                                    authenticator=handler.authenticate,
                                    auth_failures=auth_failures)

        async def main():  # type: ignore[no-untyped-def]
            server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                         tls_context=_client_tls(), timeout=10)
                await client.connect()
                return await scenario(client, handler)
            finally:
                server.close()

        return asyncio.run(main())

    return run


def test_unauthenticated_relay_is_refused(listener) -> None:  # type: ignore[no-untyped-def]
    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await client.mail("spammer@evil.example")
        assert caught.value.code == 530
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught_rcpt:
            await client.rcpt("victim@example.net")
        assert caught_rcpt.value.code in (503, 530)

    listener(scenario, trusted=True)


def test_auth_before_starttls_is_refused(listener, tenant_a) -> None:  # type: ignore[no-untyped-def]
    key = create_api_key(tenant_a.id, role="editor").key

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        assert not client.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPException) as caught:
            await client.login("app", key)
        code = getattr(caught.value, "code", None)
        assert code in (530, 538, None)
        await client.starttls()
        await client.ehlo()
        assert client.supports_extension("auth")
        response = await client.login("app", key)
        assert response.code == 235

    listener(scenario, trusted=False)


def test_wrong_key_is_refused(listener) -> None:  # type: ignore[no-untyped-def]
    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await client.login("app", "sm_live_nothere_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        assert caught.value.code == 535

    listener(scenario, trusted=True)


def test_authenticated_submission_is_spooled_signed(  # type: ignore[no-untyped-def]
    listener, tenant_a, tenant_b, sending_domain, tmp_path
) -> None:
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    unverified = sending_domain(tenant_a.id, f"u{uuid.uuid4().hex[:8]}.example", verified=False)
    foreign = sending_domain(tenant_b.id, f"b{uuid.uuid4().hex[:8]}.example")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        _errors, reply = await client.sendmail(f"app@{own}", ["user@example.com"], _message(own))
        assert reply.startswith("2.0.0 OK queued as")
        for domain in (unverified, foreign):
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await client.sendmail(f"app@{own}", ["user@example.com"], _message(domain))
            assert caught.value.code == 550
        with pytest.raises(aiosmtplib.SMTPDataError) as injected:
            await client.sendmail(f"app@{own}", ["user@example.com"],
                                  _message(own, extra=f"From: ceo@{foreign}\r\n"))
        assert injected.value.code == 554
        with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
            await client.sendmail(f"app@{own}", ["user@example.com"],
                                  _message(own) + b"x" * 200_000 + b"\r\n")
        assert too_big.value.code == 552

    listener(scenario, trusted=True)
    spool = Spool(tmp_path / "spool")
    (queue_id,) = list(spool.scan())
    envelope, raw = spool.read(queue_id)
    assert envelope.tenant_id == str(tenant_a.id) and envelope.source == "submission"
    assert raw.startswith(b"DKIM-Signature:") and f"d={own}".encode() in raw


def test_spool_failure_answers_451_never_250(listener, tenant_a, sending_domain) -> None:  # type: ignore[no-untyped-def]
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")

    class BrokenSpool:
        def write(self, envelope, raw):  # type: ignore[no-untyped-def]
            raise SpoolError("spool cannot write: read-only file system")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.sendmail(f"app@{own}", ["user@example.com"], _message(own))
        assert caught.value.code == 451

    listener(scenario, trusted=True, spool=BrokenSpool())


def test_a_spooled_message_is_250_even_when_the_wake_up_fails(  # type: ignore[no-untyped-def]
        listener, tenant_a, sending_domain, tmp_path) -> None:
    # Anything but 250 after the spool write makes the client send it again (or give up
    # on mail that will be delivered).
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")

    def broken_notify(queue_ids):  # type: ignore[no-untyped-def]
        raise RuntimeError("the engine is gone")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        _errors, reply = await client.sendmail(f"app@{own}", ["user@example.com"], _message(own))
        assert reply.startswith("2.0.0 OK queued as")

    listener(scenario, trusted=True, notify=broken_notify)
    assert len(list(Spool(tmp_path / "spool").scan())) == 1


def test_header_problems() -> None:
    assert header_problem(b"From: a@b.example\r\nTo: c@d\r\n\r\nx") is None
    assert header_problem(b"From: a@b.example\r\nFrom: e@f\r\n\r\nx")
    assert header_problem(b"From: a@b.example\r\nSubject: x\rBcc: y\r\n\r\nx")
    assert header_problem(b"From: a@b.example\r\nnot a header\r\n\r\nx")


def test_an_unexpected_failure_is_a_transient_451_without_internals(listener, tenant_a,
                                                                    sending_domain) -> None:  # type: ignore[no-untyped-def]
    # Regression: a database outage mid-submission answered "500 Error: (OperationalError)
    # ...", a permanent failure for a transient fault, with internals in it.
    import psycopg2

    sending_domain(tenant_a.id, "outage.example")
    key = create_api_key(tenant_a.id, role="editor").key

    async def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.mail("app@outage.example")
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.rcpt("user@example.com")
        assert caught.value.code == 451
        assert caught.value.message.startswith("4.3.0")
        assert "OperationalError" not in caught.value.message

    listener(scenario, trusted=True, handle_RCPT=down)


def test_smtputf8_submission_is_flagged_on_the_envelope(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, tmp_path
) -> None:
    # Delivery passes SMTPUTF8 on only when the spooled envelope says the submitter used it.
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.sendmail(f"app@{own}", ["usér@example.com"], _message(own),
                              mail_options=["SMTPUTF8"])
        await client.sendmail(f"app@{own}", ["plain@example.com"], _message(own))

    listener(scenario, trusted=True)
    spool = Spool(tmp_path / "spool")
    flags = {spool.read_envelope(q).recipients[0].address: spool.read_envelope(q).smtputf8
             for q in spool.scan()}
    assert flags == {"usér@example.com": True, "plain@example.com": False}


async def _raw_data(client, raw: bytes):  # type: ignore[no-untyped-def]
    """Send DATA with ``raw`` exactly as given (aiosmtplib would fix line endings)."""
    started = await client.execute_command(b"DATA")
    assert started.code == 354
    client.protocol.write(raw + (b".\r\n" if raw.endswith(b"\r\n") else b"\r\n.\r\n"))
    return await client.protocol.read_response(timeout=10)


def _as_sent(raw: bytes) -> bytes:
    """Return ``raw`` as the relay's SMTP client puts it on the wire (CRLF everywhere)."""
    from aiosmtplib.protocol import LINE_ENDINGS_REGEX

    return LINE_ENDINGS_REGEX.sub(b"\r\n", raw)


def _spooled(tmp_path) -> list[bytes]:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path / "spool")
    return [spool.read(queue_id)[1] for queue_id in sorted(spool.scan())]


def _header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_a_from_hidden_behind_a_bare_lf_is_refused(listener, tenant_a, tenant_b,  # type: ignore[no-untyped-def]
                                                   sending_domain, tmp_path) -> None:
    # Regression: the check split lines only on CRLF, so "From: a\nFrom: b" was one From
    # (250), and the next hop got two From fields.
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    foreign = sending_domain(tenant_b.id, f"b{uuid.uuid4().hex[:8]}.example")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.mail(f"app@{own}")
        await client.rcpt("user@example.com")
        reply = await _raw_data(client, (
            f"From: app@{own}\nFrom: ceo@{foreign}\r\nTo: user@example.com\r\n"
            "Subject: hi\r\n\r\nbody\r\n").encode())
        assert (reply.code, reply.message[:5]) == (554, "5.6.0")
        assert "more than one from" in reply.message

    listener(scenario, trusted=True)
    assert _spooled(tmp_path) == []


def test_a_from_with_two_mailboxes_needs_a_sender_and_both_are_checked(  # type: ignore[no-untyped-def]
    listener, tenant_a, tenant_b, sending_domain, tmp_path
) -> None:
    # Regression: "From: a@own, b@foreign" was accepted with only the first mailbox checked.
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    other = sending_domain(tenant_a.id, f"o{uuid.uuid4().hex[:8]}.example")
    foreign = sending_domain(tenant_b.id, f"b{uuid.uuid4().hex[:8]}.example")

    def message(headers: str) -> bytes:
        return f"{headers}To: user@example.com\r\nSubject: hi\r\n\r\nbody\r\n".encode()

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        with pytest.raises(aiosmtplib.SMTPDataError) as no_sender:
            await client.sendmail(f"app@{own}", ["user@example.com"],
                                  message(f"From: app@{own}, ceo@{foreign}\r\n"))
        assert no_sender.value.code == 554 and no_sender.value.message.startswith("5.6.0")
        with pytest.raises(aiosmtplib.SMTPDataError) as foreign_author:
            await client.sendmail(f"app@{own}", ["user@example.com"], message(
                f"From: app@{own}, ceo@{foreign}\r\nSender: app@{own}\r\n"))
        assert foreign_author.value.code == 550 and foreign in foreign_author.value.message
        with pytest.raises(aiosmtplib.SMTPDataError) as foreign_sender:
            await client.sendmail(f"app@{own}", ["user@example.com"], message(
                f"From: app@{own}\r\nSender: ceo@{foreign}\r\n"))
        assert foreign_sender.value.code == 550
        _errors, reply = await client.sendmail(f"app@{own}", ["user@example.com"], message(
            f"From: app@{own}, team@{other}\r\nSender: app@{own}\r\n"))
        assert reply.startswith("2.0.0")

    listener(scenario, trusted=True)
    assert len(_spooled(tmp_path)) == 1


def test_the_envelope_sender_must_be_the_tenants_own(  # type: ignore[no-untyped-def]
    listener, runtime, tenant_a, tenant_b, sending_domain, tmp_path
) -> None:
    # Regression: MAIL FROM:<someone-else@elsewhere> was accepted, and the DSN of a later
    # bounce went to that third party (backscatter).
    from swiftmail_relay import verp

    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    unverified = sending_domain(tenant_a.id, f"u{uuid.uuid4().hex[:8]}.example", verified=False)
    secret = runtime.settings.secret_key
    own_verp = verp.encode(secret, tenant_a.id, 0, f"bounces.{own}")
    foreign_verp = verp.encode(secret, tenant_b.id, 0, f"bounces.{own}")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        for sender in ("someone-else@elsewhere.example", f"app@{unverified}", foreign_verp):
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.mail(sender)
            assert (caught.value.code, caught.value.message[:5]) == (553, "5.7.1")
            await client.rset()
        for sender in (f"app@{own}", f"APP@{own.upper()}", own_verp):
            _errors, reply = await client.sendmail(sender, ["user@example.com"], _message(own))
            assert reply.startswith("2.0.0")

    listener(scenario, trusted=True)
    spool = Spool(tmp_path / "spool")
    senders = sorted(spool.read_envelope(q).mail_from for q in spool.scan())
    assert senders == sorted([f"app@{own}", f"APP@{own.upper()}", own_verp])


def test_a_bare_cr_in_the_body_is_made_crlf_before_signing(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, dkim_dnsfunc, tmp_path
) -> None:
    # Regression: a bare CR was signed as is and sent as CRLF: "body has been altered".
    import dkim as dkimpy

    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.mail(f"app@{own}")
        await client.rcpt("user@example.com")
        reply = await _raw_data(client, _message(own).replace(
            b"body\r\n", b"first line\rsecond line\r\nthird\r\n"))
        assert reply.code == 250

    listener(scenario, trusted=True)
    (raw,) = _spooled(tmp_path)
    assert raw == _as_sent(raw)
    assert raw.endswith(b"first line\r\nsecond line\r\nthird\r\n")
    assert dkimpy.verify(_as_sent(raw), dnsfunc=dkim_dnsfunc)


def test_lf_only_messages_are_accepted_and_over_long_lines_get_an_enhanced_code(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, dkim_dnsfunc, tmp_path
) -> None:
    # Regression: an LF-only message over ~1,000 bytes was one "line" to the listener,
    # which reads up to CRLF: "500 Line too long", without an enhanced code.
    import dkim as dkimpy

    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    lf_only = (f"From: app@{own}\nTo: user@example.com\nSubject: long\n\n".encode()
               + b"".join(b"line %03d " % n + b"x" * 70 + b"\n" for n in range(100)))

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.mail(f"app@{own}")
        await client.rcpt("user@example.com")
        accepted = await _raw_data(client, lf_only)
        assert accepted.code == 250, accepted
        for long_line in (b"y" * 1200 + b"\r\n", b"z" * 1200 + b"\n"):
            await client.mail(f"app@{own}")
            await client.rcpt("user@example.com")
            refused = await _raw_data(client, _message(own) + long_line)
            assert (refused.code, refused.message[:5]) == (500, "5.5.2"), refused
        assert (await client.noop()).code == 250  # the session goes on

    listener(scenario, trusted=True)
    (raw,) = _spooled(tmp_path)
    assert raw == _as_sent(raw) and raw.count(b"\r\n") > 100
    assert dkimpy.verify(raw, dnsfunc=dkim_dnsfunc)


def test_received_date_and_message_id_are_added_and_bcc_is_removed(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, dkim_dnsfunc, tmp_path
) -> None:
    # Regression: no trace field, no Date or Message-ID when the submitter left them out,
    # and Bcc went to every recipient.
    import email
    import email.policy

    import dkim as dkimpy

    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    bare = (f"From: app@{own}\r\nTo: user@example.com\r\nBcc: hidden@example.net,\r\n"
            f" other@example.net\r\nSubject: hi\r\n\r\nbody\r\n").encode()

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo(hostname="client.example")
        await client.login("app", key)
        await client.sendmail(f"app@{own}", ["user@example.com", "hidden@example.net"], bare)
        await client.sendmail(f"app@{own}", ["user@example.com"], _message(own, extra=(
            "Date: Fri, 27 Nov 2026 20:00:00 +0000\r\n")))

    listener(scenario, trusted=True)
    completed, kept = _spooled(tmp_path)
    parsed = email.message_from_bytes(completed, policy=email.policy.default)
    received = str(parsed["Received"])
    assert received.startswith("from client.example ([127.0.0.1])")
    assert "by localhost (SwiftMail) with ESMTPA id" in received
    assert "for <" not in received  # two recipients: none named
    assert parsed["Date"].datetime is not None
    assert parsed["Message-ID"].endswith(f"@{own}>")
    assert b"hidden@" not in completed and b"other@" not in completed and "Bcc" not in parsed
    assert dkimpy.verify(completed, dnsfunc=dkim_dnsfunc)
    kept_headers = email.message_from_bytes(kept, policy=email.policy.default)
    assert kept_headers.get_all("Date") == ["Fri, 27 Nov 2026 20:00:00 +0000"]
    assert len(kept_headers.get_all("Message-ID")) == 1
    assert "for <user@example.com>" in str(kept_headers["Received"])


class _RecordingFailures(AuthFailures):
    """AuthFailures with tiny delays that remembers the delays it asked for."""

    def __init__(self) -> None:
        super().__init__(limit=5, base_delay=0.001, max_delay=0.004)
        self.delays: list[float] = []

    async def failed(self, address: str) -> float:
        delay = await super().failed(address)
        self.delays.append(delay)
        return delay


async def _try_login(client, password: str) -> int:  # type: ignore[no-untyped-def]
    try:
        return (await client.auth_plain("app", password)).code
    except aiosmtplib.SMTPResponseException as ex:
        return ex.code
    except aiosmtplib.SMTPServerDisconnected:
        return 0


def test_repeated_failed_auth_is_slowed_then_disconnected_per_source_address(listener) -> None:  # type: ignore[no-untyped-def]
    # Regression: 30 failed AUTH in one session were all answered at once.
    failures = _RecordingFailures()
    wrong = "sm_live_nothere_" + "x" * 40

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        codes = []
        for _ in range(30):
            codes.append(await _try_login(client, wrong))
            if codes[-1] != 535:
                break
        assert codes == [535, 535, 535, 535, 421]
        assert not client.is_connected
        again = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, timeout=10,
                                start_tls=False)
        await again.connect()
        await again.ehlo()
        assert await _try_login(again, wrong) == 421  # counted per address, not per session
        elsewhere = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, timeout=10,
                                    start_tls=False, source_address=("127.0.0.2", 0))
        await elsewhere.connect()
        await elsewhere.ehlo()
        assert await _try_login(elsewhere, wrong) == 535
        await elsewhere.quit()

    listener(scenario, trusted=True, auth_failures=failures)
    assert failures.delays == [0.001, 0.002, 0.004, 0.004, 0.004, 0.001]


def test_the_credential_lookup_runs_off_the_event_loop(listener, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: AUTH looked the key up in the database on the event loop, so a slow
    # lookup stalled every other session.
    key = create_api_key(tenant_a.id, role="editor").key
    release = threading.Event()
    order: list[str] = []

    class SlowPlugins:
        def authenticate(self, credentials):  # type: ignore[no-untyped-def]
            order.append("lookup started")
            release.wait(10)
            order.append("lookup done")
            return runtime.plugins.authenticate(credentials)

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        login = asyncio.create_task(client.login("app", key))
        for _ in range(1000):
            if order:
                break
            await asyncio.sleep(0.01)
        other = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, timeout=10,
                                start_tls=False)
        await other.connect()
        await other.ehlo()
        await other.noop()
        order.append("other session served")
        release.set()
        assert (await login).code == 235
        await other.quit()

    listener(scenario, trusted=True, plugins=SlowPlugins())
    assert order == ["lookup started", "other session served", "lookup done"]


def test_the_credential_cache_is_bounded_and_keeps_only_successes(listener, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: the auth cache was a dict that was never evicted, failures included.
    from cachetools import TTLCache
    from swiftmail_relay.submission import AUTH_CACHE_ENTRIES, AUTH_CACHE_SECONDS

    key = create_api_key(tenant_a.id, role="editor").key

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        assert await _try_login(client, "sm_live_nothere_" + "x" * 40) == 535
        assert await _try_login(client, key) == 235
        return handler._auth_cache

    cache = listener(scenario, trusted=True)
    assert isinstance(cache, TTLCache)
    assert (cache.maxsize, cache.ttl, len(cache)) == (AUTH_CACHE_ENTRIES, AUTH_CACHE_SECONDS, 1)


def test_lf_only_mail_after_starttls_is_taken_and_traced_as_esmtpsa(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, tmp_path
) -> None:
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    lf_only = (f"From: app@{own}\nTo: u@example.com\nSubject: x\n\n".encode()
               + b"".join(b"line %04d\n" % n for n in range(400)))

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.starttls()
        await client.ehlo()
        await client.login("app", key)
        await client.mail(f"app@{own}")
        await client.rcpt("u@example.com")
        assert (await _raw_data(client, lf_only)).code == 250
        assert (await client.noop()).code == 250

    listener(scenario, trusted=False)
    (raw,) = _spooled(tmp_path)
    assert b"(SwiftMail) with ESMTPSA id " in raw and raw == _as_sent(raw)


def test_a_submission_records_its_domains_return_path_domain(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, tmp_path
) -> None:
    # With bounce_domain set, relayed submissions then bounce to bounces.<From domain>
    # (SPF aligned with From), not to the global bounce_domain.
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.models import SendingDomain

    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    with tenant_tx(tenant_a.id):
        SendingDomain.update(return_path_domain=f"bounces.{own}").where(
            (SendingDomain.tenant_id == tenant_a.id) & (SendingDomain.domain == own)).execute()

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        await client.sendmail(f"app@{own}", ["user@example.com"], _message(own))

    listener(scenario, trusted=True)
    spool = Spool(tmp_path / "spool")
    (queue_id,) = list(spool.scan())
    envelope = spool.read_envelope(queue_id)
    assert envelope.return_path_domain == f"bounces.{own}" and envelope.mail_from == f"app@{own}"


def test_sessions_log_no_warning_per_connection(listener, tenant_a, sending_domain, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: every session on a trusted listener logged "auth_required == True but
    # auth_require_tls == False", and every AUTH "Session.login_data is deprecated".
    import logging

    caplog.set_level(logging.WARNING, logger="mail.log")
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        for _ in range(3):
            session = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, timeout=10,
                                      start_tls=False)
            await session.connect()
            await session.login("app", key)
            await session.sendmail(f"app@{own}", ["user@example.com"], _message(own))
            await session.quit()

    listener(scenario, trusted=True)
    assert [r.getMessage() for r in caplog.records if r.name == "mail.log"] == []


def test_stalled_credential_lookups_leave_the_shared_worker_threads_free(listener, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: AUTH lookups ran in the loop's default executor, which the spool writes
    # and deliveries share; as many stalled lookups as it has threads stalled them all.
    import os

    key = create_api_key(tenant_a.id, role="editor").key
    release = threading.Event()
    started = threading.Semaphore(0)
    sessions = min(32, (os.cpu_count() or 1) + 4) + 1  # more than the default executor holds

    class StalledDatabase:
        def authenticate(self, credentials):  # type: ignore[no-untyped-def]
            started.release()
            release.wait(10)
            return runtime.plugins.authenticate(credentials)

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        clients = []
        for _ in range(sessions):
            other = aiosmtplib.SMTP(hostname="127.0.0.1", port=client.port, timeout=20,
                                    start_tls=False)
            await other.connect()
            await other.ehlo()
            clients.append(other)
        logins = [asyncio.create_task(c.auth_plain("app", key)) for c in clients]
        for _ in range(1000):
            if started.acquire(blocking=False) or all(login.done() for login in logins):
                break
            await asyncio.sleep(0.01)
        try:
            # The loop's default executor (spool writes, signing) still answers at once.
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        finally:
            release.set()
        assert [(await login).code for login in logins] == [235] * sessions

    listener(scenario, trusted=True, plugins=StalledDatabase())


def test_a_unicode_from_domain_matches_its_stored_ascii_domain(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, tmp_path
) -> None:
    # Regression: sending domains are stored as A-labels; a From written in U-labels
    # (SMTPUTF8 mail) was refused as "not a verified sending domain" of its own tenant.
    key = create_api_key(tenant_a.id, role="editor").key
    label = f"bücher{uuid.uuid4().hex[:6]}"
    stored = sending_domain(tenant_a.id, f"{label}.example".encode("idna").decode())
    message = (f"From: App <app@{label}.example>\r\nTo: user@example.com\r\nSubject: hi\r\n"
               f"\r\nbody\r\n").encode()

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        return await client.sendmail(f"app@{stored}", ["user@example.com"], message)

    errors, reply = listener(scenario, trusted=True)
    assert errors == {} and reply.startswith("2.0.0 OK queued")
    spool = Spool(tmp_path / "spool")
    (queue_id,) = list(spool.scan())
    assert spool.read_envelope(queue_id).sender_domain == stored


def test_dots_are_unstuffed_only_at_crlf_line_starts(  # type: ignore[no-untyped-def]
    listener, tenant_a, sending_domain, tmp_path
) -> None:
    # Checked (not a defect): RFC 5321 4.5.2 transparency works on CRLF lines, and a
    # bare LF is no line break (2.3.8). aiosmtpd unstuffs a dot only after CRLF, as
    # it ends DATA only at CRLF.CRLF. In an LF-only message "\n..x" is therefore
    # content, kept as sent: unstuffing it would cut a dot from every client that
    # does not stuff after a bare LF, and reading a bare LF as a line break in DATA is
    # what SMTP smuggling exploits ("\n.\n" must not end the message either).
    key = create_api_key(tenant_a.id, role="editor").key
    own = sending_domain(tenant_a.id, f"a{uuid.uuid4().hex[:8]}.example")
    lf_only = (f"From: app@{own}\nTo: user@example.com\nSubject: lf\n\n"
               "..lf stuffed?\n.\nMAIL FROM:<smuggled@example.net>\nend\n").encode()
    crlf = _message(own).replace(b"body\r\n", b"..crlf stuffed\r\n..\r\nend\r\n")

    async def scenario(client, handler):  # type: ignore[no-untyped-def]
        await client.ehlo()
        await client.login("app", key)
        for raw in (lf_only, crlf):
            await client.mail(f"app@{own}")
            await client.rcpt("user@example.com")
            assert (await _raw_data(client, raw)).code == 250
        assert (await client.noop()).code == 250  # nothing was left unread

    listener(scenario, trusted=True)
    from_lf, from_crlf = sorted(_spooled(tmp_path), key=lambda raw: b"Subject: lf" not in raw)
    assert b"\r\n\r\n..lf stuffed?\r\n.\r\nMAIL FROM:<smuggled@example.net>\r\nend\r\n" in from_lf
    assert from_crlf.endswith(b"\r\n\r\n.crlf stuffed\r\n.\r\nend\r\n")
