"""DKIM keys and verified sending domains, read once and cached.

Keys live encrypted in ``sending_domains``; the relay reads them as the
system role (it signs for every tenant) and decrypts them with
``secret_key``. A verified domain and a parsed key are cached for ``ttl``
seconds (300) so signing never waits on the database in the steady state;
an unknown or not yet verified domain only for ``negative_ttl`` (30), so a
domain verified a minute ago is accepted. The caches are bounded
(``max_entries`` each) and thread-safe: lookups run in worker threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from cachetools import TTLCache
from swiftmail_relay import dkim

from swiftmail_core import crypto
from swiftmail_core.db import system_db, system_tx
from swiftmail_core.models import SendingDomain


class KeyStore:
    """Find the signing keys and verification state of a tenant's domains."""

    def __init__(self, secret_key: str, *, ttl: float = 300.0, negative_ttl: float = 30.0,
                 ed25519: bool = True, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.secret_key = secret_key
        self.ttl = ttl
        self.ed25519 = ed25519
        self._verified: TTLCache[tuple[str, str], SendingDomain] = TTLCache(
            max_entries, ttl, timer=clock)
        self._others: TTLCache[tuple[str, str], SendingDomain | None] = TTLCache(
            max_entries, negative_ttl, timer=clock)
        self._signing: TTLCache[tuple[str, str], list[dkim.SigningKey]] = TTLCache(
            max_entries, ttl, timer=clock)
        self._lock = threading.Lock()

    def domain(self, tenant_id: uuid.UUID | str, domain: str) -> SendingDomain | None:
        """Return the tenant's sending domain row for ``domain`` (cached)."""
        key = (str(tenant_id), domain.lower())
        with self._lock:
            if key in self._verified:
                return self._verified[key]
            if key in self._others:
                return self._others[key]
        # APPSEC: the lookup is keyed by the tenant the credential fixed, so
        # one tenant can never sign with (or send from) another's domain.
        with system_tx():
            row = (
                SendingDomain.select()
                .where((SendingDomain.tenant_id == key[0]) & (SendingDomain.domain == key[1]))
                .bind(system_db)
                .first()
            )
        with self._lock:
            if row is not None and row.verified_at is not None:
                self._verified[key] = row
            else:
                self._others[key] = row
        return row

    def is_verified(self, tenant_id: uuid.UUID | str, domain: str) -> bool:
        """Return True if ``domain`` is one of the tenant's verified sending domains."""
        row = self.domain(tenant_id, domain)
        return row is not None and row.verified_at is not None

    def signing_keys(self, tenant_id: uuid.UUID | str, domain: str) -> list[dkim.SigningKey]:
        """Return the RSA key (and Ed25519 key, if any) for the From domain."""
        key = (str(tenant_id), domain.lower())
        with self._lock:
            cached = self._signing.get(key)
        if cached is not None:
            return cached
        keys = self._load_signing_keys(tenant_id, domain)
        with self._lock:
            self._signing[key] = keys
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
        with self._lock:
            self._verified.clear()
            self._others.clear()
            self._signing.clear()
