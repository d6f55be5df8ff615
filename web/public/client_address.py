"""The visitor's address behind trusted proxies, from X-Forwarded-For.

Each proxy appends the address it received the request from, so only the
right end of ``X-Forwarded-For`` is trustworthy: the leftmost entries are
whatever the client chose to send (a per-IP rate-limit bypass when taken).
Walk from the right, starting with the socket's peer, skipping addresses
that are trusted proxies (``trusted_proxies`` networks, or the last
``trusted_hops`` hops); the first one that is not is the visitor. A value
that is not an IP address stops the walk: the last valid address is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(peer: str | None, forwarded_for: str | None, *,
                   trusted_proxies: Sequence[Network] = (), trusted_hops: int = 0) -> str:
    """Return the visitor's address; the peer's own when no proxy is trusted."""
    chain = [part.strip() for part in (forwarded_for or "").split(",") if part.strip()]
    chain.append(peer or "")
    client = ""
    hops = 0
    for entry in reversed(chain):
        address = _parse(entry)
        if address is None:
            break
        client = str(address)
        trusted = (any(address in network for network in trusted_proxies) if trusted_proxies
                   else hops < trusted_hops)
        if not trusted:
            break
        hops += 1
    return client or (peer or "")


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) \
        else address
