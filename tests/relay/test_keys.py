"""The key store's caches: bounded, and a fresh verification is seen within 30 seconds."""

from __future__ import annotations

import uuid

from swiftmail_relay.keys import KeyStore

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import SendingDomain, utcnow


def _set_verified(tenant_id, domain: str, verified: bool) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        SendingDomain.update(verified_at=utcnow() if verified else None).where(
            (SendingDomain.tenant_id == tenant_id) & (SendingDomain.domain == domain)).execute()


def test_a_domain_verified_a_minute_ago_is_accepted(runtime, tenant_a, sending_domain) -> None:  # type: ignore[no-untyped-def]
    # Regression: a negative lookup was cached for 5 minutes, like a positive one.
    now = [1000.0]
    keys = KeyStore(runtime.settings.secret_key, clock=lambda: now[0])
    domain = sending_domain(tenant_a.id, f"v{uuid.uuid4().hex[:8]}.example", verified=False)
    assert not keys.is_verified(tenant_a.id, domain)
    _set_verified(tenant_a.id, domain, True)
    now[0] += 31
    assert keys.is_verified(tenant_a.id, domain)
    _set_verified(tenant_a.id, domain, False)
    now[0] += 200
    assert keys.is_verified(tenant_a.id, domain)  # a verified domain stays cached for 300 s
    now[0] += 101
    assert not keys.is_verified(tenant_a.id, domain)


def test_the_caches_are_bounded(runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    keys = KeyStore(runtime.settings.secret_key, max_entries=3)
    for n in range(10):
        assert keys.domain(tenant_a.id, f"n{n}.example") is None
    assert len(keys._others) == 3
