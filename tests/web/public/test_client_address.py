"""The visitor's address behind trusted proxies (X-Forwarded-For, right to left)."""

from __future__ import annotations

import ipaddress

import pytest
from swiftmail_web.public.client_address import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("peer", "header", "options", "expected"), [
    # Regression: with trust_forwarded_for the LEFTMOST, client-supplied entry was used.
    ("10.0.0.2", "6.6.6.6, 203.0.113.9", {"trusted_hops": 1}, "203.0.113.9"),
    ("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", {"trusted_proxies": PROXIES}, "203.0.113.9"),
    ("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", {"trusted_hops": 2}, "203.0.113.9"),
    ("198.51.100.7", "6.6.6.6", {}, "198.51.100.7"),  # no proxy trusted: the peer
    ("198.51.100.7", "6.6.6.6", {"trusted_proxies": PROXIES}, "198.51.100.7"),  # peer untrusted
    # Regression: a non-IP value was a 500; now the last valid address is used.
    ("10.0.0.2", "<script>, not-an-ip", {"trusted_hops": 1}, "10.0.0.2"),
    ("10.0.0.2", "203.0.113.9:4711", {"trusted_hops": 1}, "203.0.113.9"),
    ("10.0.0.2", "[2001:db8::1]:443", {"trusted_hops": 1}, "2001:db8::1"),
    ("10.0.0.2", None, {"trusted_hops": 1}, "10.0.0.2"),
])
def test_client_address(peer, header, options, expected) -> None:  # type: ignore[no-untyped-def]
    assert client_address(peer, header, **options) == expected
