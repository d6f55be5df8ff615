"""A renewed relay certificate is served after SIGHUP or a file change, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swiftmail_core.errors import ConfigurationError
from tests.relay.tls_peers import Pki

ROOT = Path(__file__).resolve().parents[2]
HOST = "mta.relay.test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _smtp_certificate(port: int) -> bytes:
    """Connect, STARTTLS, and return the DER certificate the server presented."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=_client_context())
        return client.sock.getpeercert(binary_form=True)


def _https_certificate(port: int) -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    return ssl.PEM_cert_to_DER_cert(pem)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _serves(port: int, leaf: x509.Certificate, read=_smtp_certificate) -> bool:  # type: ignore[no-untyped-def]
    try:
        return read(port) == _der(leaf)
    except OSError:
        return False


@contextlib.contextmanager
def _relay(environ: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `swiftmail relay run` (output to ``log``); then SIGTERM it: it must exit 0."""
    output = log.open("w+")
    process = subprocess.Popen(
        [sys.executable, "-W", "error::DeprecationWarning", "-m", "swiftmail_core.cli",
         "relay", "run"], cwd=ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
        output.close()
    assert code == 0, log.read_text()


def test_relay_serves_a_renewed_certificate_after_sighup_without_dropping_sessions(
    test_environ, targets, tmp_path, run_id
) -> None:  # type: ignore[no-untyped-def]
    pki = Pki()
    chain, key, first = pki.issue(tmp_path, HOST)
    submission, bounce, intake, metrics = (_free_port() for _ in range(4))
    environ = {
        **os.environ, **test_environ,
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "SWIFTMAIL_PLUGIN_RELAY_HOSTNAME": HOST,
        "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{submission}",
        "SWIFTMAIL_PLUGIN_RELAY_TRUSTED_LISTENERS": "",
        "SWIFTMAIL_PLUGIN_RELAY_BOUNCE_LISTEN": f"127.0.0.1:{bounce}",
        "SWIFTMAIL_PLUGIN_RELAY_INTAKE_LISTEN": f"127.0.0.1:{intake}",
        "SWIFTMAIL_PLUGIN_RELAY_INTAKE_TLS": "true",
        "SWIFTMAIL_PLUGIN_RELAY_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "SWIFTMAIL_PLUGIN_RELAY_TLS_CERT": str(chain),
        "SWIFTMAIL_PLUGIN_RELAY_TLS_KEY": str(key),
        # Long enough that the SIGHUP step is not the file check's doing.
        "SWIFTMAIL_PLUGIN_RELAY_TLS_RELOAD_CHECK_SECONDS": "3600",
        "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"{run_id}:tls-reload",
    }
    with _relay(environ, tmp_path / "relay.log") as process:
        _until(lambda: process.poll() is None and _serves(submission, first),
               "the relay did not serve its first certificate on submission")
        assert _serves(bounce, first)  # STARTTLS on the bounce listener (port 25) too
        _until(lambda: _serves(intake, first, _https_certificate), "intake TLS")

        # A session in progress when the certificate is renewed.
        open_session = smtplib.SMTP("127.0.0.1", submission, timeout=10)
        open_session.starttls(context=_client_context())
        open_session.ehlo()

        chain, key, second = pki.issue(tmp_path, HOST)  # renewed in place
        process.send_signal(signal.SIGHUP)
        _until(lambda: _serves(submission, second), "SIGHUP did not load the renewed certificate")
        assert _serves(bounce, second)
        assert _serves(intake, second, _https_certificate)
        # The old session was not dropped: it still talks, under its first certificate.
        assert open_session.noop()[0] == 250
        assert open_session.sock.getpeercert(binary_form=True) == _der(first)
        assert open_session.mail("someone@example.com")[0] == 530  # AUTH still required
        open_session.quit()

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as page:
            text = page.read().decode()
        (value,) = re.findall(
            r"^swiftmail_relay_tls_certificate_expiry_timestamp_seconds (\S+)$", text, re.M)
        assert float(value) == second.not_valid_after_utc.timestamp()
        assert process.poll() is None
    logged = (tmp_path / "relay.log").read_text()
    assert '"event": "tls_reloaded"' in logged, logged
    assert "Warning" not in logged, logged


def test_a_relay_without_a_certificate_survives_sighup(
    test_environ, targets, tmp_path, run_id
) -> None:  # type: ignore[no-untyped-def]
    """`systemctl reload` of a relay with no tls_cert: logged, not an exit.

    Before, SIGHUP had a handler only with a certificate: without one it ended
    the relay, and systemd, counting an exit on SIGHUP as clean, did not restart it.
    """
    submission, metrics = _free_port(), _free_port()
    environ = {
        **os.environ, **test_environ,
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "SWIFTMAIL_PLUGIN_RELAY_HOSTNAME": HOST,
        "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{submission}",
        "SWIFTMAIL_PLUGIN_RELAY_TRUSTED_LISTENERS": "",
        "SWIFTMAIL_PLUGIN_RELAY_BOUNCE_LISTEN": "",
        "SWIFTMAIL_PLUGIN_RELAY_INTAKE_LISTEN": "",
        "SWIFTMAIL_PLUGIN_RELAY_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"{run_id}:no-tls-reload",
    }

    def greets() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", submission, timeout=10) as client:
                return client.noop()[0] == 250
        except OSError:
            return False

    with _relay(environ, tmp_path / "relay.log") as process:
        _until(lambda: process.poll() is None and greets(), "the relay did not start")
        process.send_signal(signal.SIGHUP)
        _until(lambda: '"event": "relay_reload_ignored"' in tmp_path.joinpath("relay.log").read_text()
               or process.poll() is not None, "the relay neither logged the SIGHUP nor ended")
        assert process.poll() is None, "SIGHUP ended the relay"
        assert greets()


def test_a_file_change_is_picked_up_and_a_broken_renewal_keeps_the_old_certificate(
    tmp_path,
) -> None:
    from swiftmail_relay.server_tls import ServerTls

    pki = Pki()
    chain, key, _first = pki.issue(tmp_path, HOST)
    tls = ServerTls(str(chain), str(key))
    assert not tls.changed()
    chain, key, second = pki.issue(tmp_path, HOST)
    assert tls.changed()
    assert tls.reload()
    assert tls.expires_at == second.not_valid_after_utc.timestamp()
    # A half-written renewal (the key of another certificate) fails and keeps the old one.
    other_chain, _other_key, _ = pki.issue(tmp_path, "other.relay.test")
    chain.write_bytes(other_chain.read_bytes())
    assert tls.changed()
    assert not tls.reload()
    assert tls.expires_at == second.not_valid_after_utc.timestamp()
    # The live context still serves the second certificate, with its key.
    assert _presented(tls.context) == _der(second)


def _presented(server_context: ssl.SSLContext) -> bytes:
    """Handshake in memory with a server context; return the certificate it presents."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = _client_context().wrap_bio(client_in, client_out, server_hostname=HOST)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return client.getpeercert(binary_form=True)


def test_the_file_check_reloads_a_renewal_without_a_signal(tmp_path) -> None:
    from swiftmail_relay.server_tls import ServerTls

    pki = Pki()
    chain, key, _first = pki.issue(tmp_path, HOST)
    tls = ServerTls(str(chain), str(key))

    async def renew_and_wait() -> None:
        watcher = asyncio.create_task(tls.watch(0.05))
        try:
            _, _, second = pki.issue(tmp_path, HOST)
            for _ in range(200):
                if _presented(tls.context) == _der(second):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the file check did not reload the renewed certificate")
        finally:
            watcher.cancel()

    asyncio.run(asyncio.wait_for(renew_and_wait(), 30))


def test_a_missing_certificate_is_one_configuration_error(tmp_path) -> None:
    from swiftmail_relay.server_tls import ServerTls

    with pytest.raises(ConfigurationError, match="cannot load"):
        ServerTls(str(tmp_path / "none.pem"), str(tmp_path / "none.key"))


def test_doctor_warns_about_a_certificate_close_to_its_expiry(tmp_path) -> None:
    from swiftmail_relay.plugin import swiftmail_doctor_checks

    from swiftmail_core.settings import Settings

    def findings(**relay):  # type: ignore[no-untyped-def]
        settings = Settings(data_dir=tmp_path, plugins={"relay": {
            "spool_dir": str(tmp_path / "spool"), **relay}})
        return swiftmail_doctor_checks(settings)

    assert findings() == []  # no certificate configured, nothing to say
    chain, key, leaf = Pki().issue(tmp_path, HOST)  # valid for 10 days
    (finding,) = findings(tls_cert=str(chain), tls_key=str(key))
    assert not finding.ok and finding.warning
    assert leaf.not_valid_after_utc.strftime("%Y-%m-%d") in finding.detail
    (broken,) = findings(tls_cert=str(tmp_path / "none.pem"), tls_key=str(key))
    assert not broken.ok and not broken.warning and "cannot load" in broken.detail
