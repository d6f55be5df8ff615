"""The submission listener: never an open relay, AUTH only under TLS, durable 250."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ssl
import uuid
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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
        handler = SubmissionHandler(settings, config, runtime.plugins)
        for name, value in overrides.items():
            setattr(handler, name, value)
        factory = make_smtp_factory(handler, config, trusted=trusted,
                                    tls_context=tls_context(config),
                                    authenticator=handler.authenticate)

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
                await client.sendmail(f"app@{domain}", ["user@example.com"], _message(domain))
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
