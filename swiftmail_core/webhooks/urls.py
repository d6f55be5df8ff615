"""Which webhook URLs SwiftMail may call: https to public addresses only.

APPSEC: server-side request forgery defence. A URL is refused unless it is
https (http only with the explicit ``webhook_allow_loopback_http`` setting,
meant for tests, and then only to loopback), carries no credentials, and
every address its host resolves to is globally routable: loopback, private,
link-local (cloud metadata 169.254.169.254), shared, multicast, reserved and
unspecified ranges are refused, in IPv4, IPv6 and IPv4-mapped forms.
Numeric host spellings (``2130706433``, ``0x7f.1``, ``017700000001``) are
refused outright. The check runs at save time and again at every delivery,
and the delivery connects to the address that was checked (no second lookup).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Callable, Sequence

import dns.exception
import dns.resolver

from swiftmail_core.errors import ValidationError
from swiftmail_core.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"),
                      ipaddress.ip_address("fd00:ec2::254")}


@dataclasses.dataclass(frozen=True)
class UrlPolicy:
    """How strict the check is and how names are resolved."""

    allow_loopback_http: bool = False
    nameservers: tuple[str, ...] = ()
    dns_port: int = 53
    timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        """Build the policy from the core settings."""
        return cls(
            allow_loopback_http=bool(getattr(settings, "webhook_allow_loopback_http", False)),
            nameservers=tuple(settings.dns_nameservers),
            dns_port=settings.dns_port,
        )

    def resolve(self, host: str) -> list[str]:
        """Return the A and AAAA addresses of ``host``."""
        if not self.nameservers:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except OSError as ex:
                raise ValidationError.for_field("url", f"cannot resolve {host}: {ex}") from ex
            return sorted({str(info[4][0]) for info in infos})
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(self.nameservers)
        resolver.port = self.dns_port
        resolver.lifetime = self.timeout
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                found += [r.to_text() for r in resolver.resolve(host, rdtype)]
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as ex:
                raise ValidationError.for_field("url", f"cannot resolve {host}: {ex}") from ex
        if not found:
            raise ValidationError.for_field("url", f"{host} has no A or AAAA record")
        return found


@dataclasses.dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the check, with the addresses it may connect to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# IPv6 prefixes whose last 32 bits are an IPv4 address a packet may end up at.
_EMBEDDING_IPV4 = tuple(ipaddress.ip_network(prefix) for prefix in (
    "64:ff9b::/96",      # NAT64, well-known prefix (RFC 6052)
    "64:ff9b:1::/48",    # NAT64, local-use prefix (RFC 8215)
    "::ffff:0:0:0/96",   # SIIT (RFC 6145): ::ffff:0:a.b.c.d
    "::/96",             # IPv4-compatible (deprecated): ::a.b.c.d
))


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """Return the IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64, SIIT, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in network for network in _EMBEDDING_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _forbidden(address: Address, allow_loopback: bool) -> bool:
    # APPSEC: an IPv6 form that embeds an internal IPv4 (NAT64 64:ff9b::a9fe:a9fe,
    # 6to4 2002:7f00:1::, ::127.0.0.1, ::ffff:0:7f00:1) is judged by what it embeds.
    if any(_forbidden(inner, allow_loopback) for inner in embedded_ipv4(address)):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return True
    if address.is_loopback:
        return not allow_loopback
    return not address.is_global or address.is_multicast


def check_webhook_url(
    url: str, policy: UrlPolicy, resolve: Resolver | None = None
) -> CheckedUrl:
    """Return the checked URL and its allowed addresses, or raise ValidationError."""
    if not isinstance(url, str) or len(url) > 2000 or any(ord(c) < 0x21 for c in url):
        raise ValidationError.for_field("url", "must be an absolute https URL")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValidationError.for_field("url", "must be an absolute https URL")
    if scheme == "http" and not policy.allow_loopback_http:
        raise ValidationError.for_field("url", "must use https")
    if parts.username is not None or parts.password is not None:
        raise ValidationError.for_field("url", "must not contain credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValidationError.for_field("url", "must name a host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as ex:
        raise ValidationError.for_field("url", "has an invalid port") from ex
    literal = _ip_literal(host)
    if literal is None:
        labels = host.split(".")
        # Numeric spellings other than dotted quads (decimal, octal, hex, short)
        # are IP addresses to resolvers: refuse them rather than guess.
        if _NUMERIC_LABEL.match(labels[-1]):
            raise ValidationError.for_field("url", "must name a host or a plain IP address")
        if not all(_HOST_LABEL.match(label) for label in labels):
            raise ValidationError.for_field("url", "has an invalid host name")
    if literal is not None:
        addresses = [str(literal)]
    else:
        addresses = (resolve or policy.resolve)(host)
    parsed = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    for address in parsed:
        if _forbidden(address, policy.allow_loopback_http):
            # APPSEC: never say what an internal name resolves to.
            raise ValidationError.for_field(
                "url", "is not a public address" if literal is not None
                else f"{host} does not resolve to public addresses only")
    if scheme == "http" and not all(a.is_loopback for a in parsed):
        raise ValidationError.for_field("url", "must use https")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return CheckedUrl(url, scheme, host, port, path, tuple(str(a) for a in parsed))


def checked_addresses(checked: CheckedUrl) -> Sequence[str]:
    """Return the addresses a delivery may connect to, in order."""
    return checked.addresses
