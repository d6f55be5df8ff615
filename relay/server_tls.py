"""The relay's server certificate (``tls_cert``/``tls_key``), renewed without a restart.

Every listener that offers TLS (STARTTLS on submission and bounce listeners,
the intake with ``intake_tls``) shares live ``SSLContext`` objects; a reload
loads the renewed certificate into them in place, so every handshake after
it presents the new certificate while sessions in progress keep theirs and
no connection is dropped. A reload happens on SIGHUP and when the files
change on disk (checked every ``tls_reload_check_seconds``). A renewal that
does not load (a key that does not match, a half-written file) is logged and
the old certificate stays.
"""

from __future__ import annotations

import asyncio
import os
import ssl

import structlog
from cryptography import x509
from swiftmail_relay import metrics

from swiftmail_core.errors import ConfigurationError

log = structlog.get_logger("swiftmail.relay")


def _fingerprint(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class ServerTls:
    """One certificate and key, loaded into every context a listener serves with."""

    def __init__(self, cert: str, key: str = "") -> None:
        self.cert = cert
        self.key = key or None
        self.contexts: list[ssl.SSLContext] = []
        #: When the loaded certificate expires (Unix time), if its file could be read.
        self.expires_at: float | None = None
        self._seen = self._files()
        self.context = self._load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
        self.contexts.append(self.context)
        self._note_expiry()

    def _files(self) -> tuple[tuple[int, int, int] | None, ...]:
        return (_fingerprint(self.cert), _fingerprint(self.key or self.cert))

    def _load(self, context: ssl.SSLContext) -> ssl.SSLContext:
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as ex:
            raise ConfigurationError(
                f"setting plugins.relay.tls_cert/tls_key: cannot load {self.cert}: {ex}") from ex
        return context

    def _note_expiry(self) -> None:
        try:
            with open(self.cert, "rb") as handle:
                certificate = x509.load_pem_x509_certificate(handle.read())
        except (OSError, ValueError):
            return
        expires = certificate.not_valid_after_utc.timestamp()
        metrics.TLS_CERTIFICATE_EXPIRY.set(expires)
        self.expires_at = expires

    def attach(self, context: ssl.SSLContext) -> None:
        """Reload ``context`` too (one a server built itself, such as the intake's)."""
        self.contexts.append(context)

    def reload(self) -> bool:
        """Load the files again into every context; False (old one kept) when they do not load."""
        self._seen = self._files()
        try:
            self._load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))  # validate first
            for context in self.contexts:
                self._load(context)
        except ConfigurationError as ex:
            log.error("tls_reload_failed", cert=self.cert, error=ex.detail)
            return False
        self._note_expiry()
        log.info("tls_reloaded", cert=self.cert, expires_at=self.expires_at)
        return True

    def changed(self) -> bool:
        """Return True when the certificate or key file changed since the last load."""
        return self._files() != self._seen

    async def watch(self, interval: float) -> None:
        """Reload whenever the files change; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                self.reload()


def server_tls(cert: str, key: str = "") -> ServerTls | None:
    """Return the relay's server certificate, or None when none is configured."""
    return ServerTls(cert, key) if cert else None
