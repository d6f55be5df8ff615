"""Test PKI and TLS servers on loopback: a CA, an SMTP server with STARTTLS, an HTTPS host."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ssl
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Pki:
    """A throwaway CA that issues server certificates."""

    def __init__(self, name: str = "SwiftMail Test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))

    def issue(self, directory: Path, host: str) -> tuple[Path, Path, x509.Certificate]:
        """Write a key and a chain (leaf, CA) for ``host``; return (chain, key, leaf)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        chain = directory / f"{host}.chain.pem"
        private = directory / f"{host}.key.pem"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + self.cert.public_bytes(serialization.Encoding.PEM))
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return chain, private, leaf

    def write_ca(self, path: Path) -> Path:
        """Write the CA certificate as PEM."""
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def tlsa_311(certificate: x509.Certificate) -> str:
    """Return the TLSA data '3 1 1 <sha256 of SPKI>' for a certificate."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def tlsa_201(certificate: x509.Certificate) -> str:
    """Return the TLSA data '2 0 1 <sha256 of the certificate>' for a trust anchor."""
    return f"2 0 1 {hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()}"


class Collect:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.tls: list[bool] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        """Keep the message."""
        self.messages.append(envelope.content)
        self.tls.append(session.ssl is not None)
        return "250 2.0.0 queued"


def smtp_server(host: str, port: int, chain: Path | None, key: Path | None) -> tuple[Controller, Collect]:
    """Start an aiosmtpd server offering STARTTLS with ``chain`` (none when None)."""
    context = None
    if chain is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain, key)
    handler = Collect()
    controller = Controller(handler, hostname=host, port=port, tls_context=context,
                            require_starttls=False, ready_timeout=5)
    controller.start()
    return controller, handler


def https_server(host: str, chain: Path, key: Path, body: bytes) -> http.server.HTTPServer:
    """Serve ``body`` at /.well-known/mta-sts.txt over HTTPS on a free port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/mta-sts.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer((host, 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
