"""Relay fixtures: a loopback DNS server, DKIM keys, a resolver for dkimpy."""

from __future__ import annotations

from collections.abc import Iterator

import dns.resolver
import pytest
from swiftmail_relay import dkim

from tests.relay.dnsserver import DnsServer


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
