"""DKIM keys and verified sending domains, read once and cached.

Keys live encrypted in ``sending_domains``; the relay reads them as the
system role (it signs for every tenant) and decrypts them with
``secret_key``. A parsed key is cached for ``ttl`` seconds so signing never
waits on the database in the steady state.
"""

from __future__ import annotations

import time
import uuid

from swiftmail_relay import dkim

from swiftmail_core import crypto
from swiftmail_core.db import system_db, system_tx
from swiftmail_core.models import SendingDomain


class KeyStore:
    """Find the signing keys and verification state of a tenant's domains."""

    def __init__(self, secret_key: str, *, ttl: float = 300.0, ed25519: bool = True) -> None:
        self.secret_key = secret_key
        self.ttl = ttl
        self.ed25519 = ed25519
        self._cache: dict[tuple[str, str], tuple[float, SendingDomain | None]] = {}
        self._signing: dict[tuple[str, str], tuple[float, list[dkim.SigningKey]]] = {}

    def domain(self, tenant_id: uuid.UUID | str, domain: str) -> SendingDomain | None:
        """Return the tenant's sending domain row for ``domain`` (cached)."""
        key = (str(tenant_id), domain.lower())
        cached = self._cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        # APPSEC: the lookup is keyed by the tenant the credential fixed, so
        # one tenant can never sign with (or send from) another's domain.
        with system_tx():
            row = (
                SendingDomain.select()
                .where((SendingDomain.tenant_id == key[0]) & (SendingDomain.domain == key[1]))
                .bind(system_db)
                .first()
            )
        self._cache[key] = (time.monotonic() + self.ttl, row)
        return row

    def is_verified(self, tenant_id: uuid.UUID | str, domain: str) -> bool:
        """Return True if ``domain`` is one of the tenant's verified sending domains."""
        row = self.domain(tenant_id, domain)
        return row is not None and row.verified_at is not None

    def signing_keys(self, tenant_id: uuid.UUID | str, domain: str) -> list[dkim.SigningKey]:
        """Return the RSA key (and Ed25519 key, if any) for the From domain."""
        key = (str(tenant_id), domain.lower())
        cached = self._signing.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        keys = self._load_signing_keys(tenant_id, domain)
        self._signing[key] = (time.monotonic() + self.ttl, keys)
        return keys

    def _load_signing_keys(self, tenant_id: uuid.UUID | str, domain: str) -> list[dkim.SigningKey]:
        row = self.domain(tenant_id, domain)
        if row is None:
            return []
        keys = [dkim.load_key(row.domain, row.dkim_selector,
                              crypto.decrypt(self.secret_key, bytes(row.dkim_private_key_encrypted)))]
        if self.ed25519 and row.dkim_ed25519_private_key_encrypted:
            selector = (row.verification or {}).get("ed25519_selector") or f"{row.dkim_selector}-ed25519"
            keys.append(dkim.load_key(
                row.domain, selector,
                crypto.decrypt(self.secret_key, bytes(row.dkim_ed25519_private_key_encrypted)),
            ))
        return keys

    def forget(self) -> None:
        """Drop cached rows (after a key rotation or verification)."""
        self._cache.clear()
        self._signing.clear()
