"""Relay fixtures: a loopback DNS server, DKIM keys, a resolver for dkimpy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dns.resolver
import pytest
from swiftmail_relay import dkim

from swiftmail_core.testing.dns import DnsServer


def txt_strings(value: str) -> str:
    """Split a long TXT value into 255-byte quoted strings."""
    return " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    """A dnspython DNS server on 127.0.0.1 (UDP and TCP, random port)."""
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rsa_key() -> tuple[bytes, str]:
    """An RSA-2048 DKIM key: (private PEM, public p= value)."""
    return dkim.generate_rsa_pem()


@pytest.fixture(scope="session")
def ed25519_key() -> tuple[bytes, str]:
    """An Ed25519 DKIM key: (private PEM, public p= value)."""
    return dkim.generate_ed25519_pem()


@pytest.fixture
def dkim_dnsfunc(dns_server: DnsServer):  # type: ignore[no-untyped-def]
    """A dkimpy ``dnsfunc`` that asks the loopback DNS server over the network."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return lookup


@pytest.fixture
def peers():  # type: ignore[no-untyped-def]
    """Factory: scripted SMTP peers on 127.0.0.x sharing one port; stopped after."""
    from tests.relay.peers import start_peers

    started = []

    def factory(count: int = 3, first: int = 2):  # type: ignore[no-untyped-def]
        found = start_peers(count, first)
        started.extend(found)
        return found

    yield factory
    for peer in started:
        peer.stop()


@pytest.fixture
def relay_factory(dns_server, tmp_path):  # type: ignore[no-untyped-def]
    """Factory: a Relay (not started) on a tmp spool, talking to loopback peers."""
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.engine import Relay

    from swiftmail_core.settings import Settings

    def factory(port: int, *, settings: Settings | None = None, **overrides):  # type: ignore[no-untyped-def]
        settings = settings or Settings(data_dir=tmp_path)
        import dataclasses

        settings = dataclasses.replace(
            settings, dns_nameservers=("127.0.0.1",), dns_port=dns_server.port)
        options = {
            "spool_dir": str(tmp_path / "spool"), "smtp_port": port,
            "allow_networks": "127.0.0.0/8", "retry_base": 0.2, "retry_cap": 0.5,
            "connect_timeout": 2, "command_timeout": 3, "dns_timeout": 2,
            "scan_interval": 0.2, "workers": 8, "hostname": "relay.test",
        }
        sink = overrides.pop("sink", None)
        throttle = overrides.pop("throttle", None)
        options.update(overrides)
        config = RelayConfig.from_settings(settings, **options)
        finals = []
        relay = Relay(settings, config, on_final=finals.append, sink=sink,
                      throttle=throttle(config) if throttle else None)
        relay.finals = finals  # type: ignore[attr-defined]
        return relay

    return factory


@pytest.fixture
def sending_domain(runtime, rsa_key, dns_server):  # type: ignore[no-untyped-def]
    """Factory: give a tenant a sending domain with a DKIM key published in the test DNS."""
    from swiftmail_core import crypto
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.models import SendingDomain, utcnow

    def factory(tenant_id, domain: str, *, verified: bool = True, selector: str = "sm1",  # type: ignore[no-untyped-def]
                warmup_plan: dict | None = None):
        secret = runtime.settings.secret_key
        with tenant_tx(tenant_id):
            SendingDomain.insert(
                tenant_id=tenant_id, id=uuid.uuid4(), domain=domain, dkim_selector=selector,
                dkim_private_key_encrypted=crypto.encrypt(secret, rsa_key[0]),
                dkim_public_key=rsa_key[1], verified_at=utcnow() if verified else None,
                warmup_plan=warmup_plan or {},
            ).execute()
        dns_server.add(f"{selector}._domainkey.{domain}", "TXT",
                       txt_strings(f"v=DKIM1; k=rsa; p={rsa_key[1]}"))
        return domain

    return factory


@pytest.fixture
def ledger_row(runtime):  # type: ignore[no-untyped-def]
    """Factory: insert a ledger (messages) row for a tenant; return its id."""
    from swiftmail_core.db import tenant_tx

    def factory(tenant_id, email: str) -> int:  # type: ignore[no-untyped-def]
        with tenant_tx(tenant_id) as database:
            cursor = database.execute_sql(
                "INSERT INTO messages (tenant_id, email, kind, status, transport) "
                "VALUES (%s, %s, 'transactional', 'accepted', 'relay') RETURNING id",
                (str(tenant_id), email),
            )
            return int(cursor.fetchone()[0])

    return factory
