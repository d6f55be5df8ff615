"""MX resolution per RFC 5321 §5.1, asynchronous, cached by TTL.

Preference order with equal preferences shuffled; implicit MX (the domain's
own A/AAAA) when there is no MX; null MX (RFC 7505) fails at once with
556 5.1.10; NXDOMAIN is permanent; SERVFAIL and timeouts are transient.
Addresses the operator has not allowed (loopback, private, link-local) are
dropped before anyone connects. With ``relayhost`` set, every domain routes
to that one host (Postfix's smarthost) and no MX is looked up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from swiftmail_relay.config import RelayConfig

from swiftmail_core.settings import Settings

NEGATIVE_TTL = 300.0


@dataclasses.dataclass(frozen=True)
class MxHost:
    """One mail exchanger with its preference and usable addresses."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Route:
    """Where mail for a domain goes: its MX hosts, in trying order."""

    domain: str
    hosts: tuple[MxHost, ...]
    implicit: bool = False

    @property
    def site(self) -> str:
        """Return the destination site: the set of MX names (shared by hosted domains)."""
        return ",".join(sorted({host.name for host in self.hosts}))


class DnsFailure(Exception):
    """A domain cannot be routed; ``permanent`` decides bounce or retry."""

    def __init__(self, reply: str, *, permanent: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


def _shuffle_equal(hosts: tuple[MxHost, ...], rng: random.Random) -> tuple[MxHost, ...]:
    groups: dict[int, list[MxHost]] = {}
    for host in hosts:
        groups.setdefault(host.preference, []).append(host)
    ordered: list[MxHost] = []
    for preference in sorted(groups):
        group = groups[preference]
        rng.shuffle(group)
        ordered.extend(group)
    return tuple(ordered)


class MxResolver:
    """Resolve a recipient domain to a ``Route`` using dns.asyncresolver."""

    def __init__(
        self,
        settings: Settings,
        config: RelayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self.resolver = dns.asyncresolver.Resolver(configure=not settings.dns_nameservers)
        if settings.dns_nameservers:
            self.resolver.nameservers = list(settings.dns_nameservers)
        self.resolver.port = settings.dns_port
        self.resolver.lifetime = config.dns_timeout
        self.resolver.timeout = config.dns_timeout
        self.resolver.cache = None  # our own TTL cache holds whole routes
        self._cache: dict[str, tuple[float, Route | DnsFailure]] = {}
        self._inflight: dict[str, asyncio.Future[Route]] = {}

    async def route(self, domain: str) -> Route:
        """Return the route for ``domain`` or raise ``DnsFailure``."""
        domain = domain.lower().rstrip(".")
        if self.config.relayhost:
            route = await self._relayhost_route()
            return dataclasses.replace(route, domain=domain)
        cached = self._cache.get(domain)
        if cached and cached[0] > self.clock():
            if isinstance(cached[1], DnsFailure):
                raise cached[1]
            return dataclasses.replace(cached[1], hosts=_shuffle_equal(cached[1].hosts, self.rng))
        pending = self._inflight.get(domain)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(domain))
            self._inflight[domain] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(domain, None))
        route = await asyncio.shield(pending)
        return dataclasses.replace(route, hosts=_shuffle_equal(route.hosts, self.rng))

    async def _relayhost_route(self) -> Route:
        """Return the one route every domain takes when ``relayhost`` is set."""
        host = self.config.relayhost
        cached = self._cache.get("[relayhost]")
        if cached and cached[0] > self.clock() and isinstance(cached[1], Route):
            return cached[1]
        try:
            addresses: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
            ttl = NEGATIVE_TTL
        except ValueError:
            try:
                addresses, ttl = await self._addresses(host)
            except DnsFailure as failure:
                # NOTE: the relayhost is the operator's setting, never the
                # recipient's fault: a failed lookup defers, it never bounces.
                raise DnsFailure(f"451 4.4.3 relayhost {host}: {failure.reply}",
                                 permanent=False) from None
        # APPSEC: the relayhost passes the same address check as any MX.
        usable = tuple(a for a in addresses if self.config.address_allowed(a))
        if not usable:
            raise DnsFailure(f"451 4.4.4 relayhost {host} has no address the relay may use "
                             "(see allow_networks)", permanent=False)
        route = Route("", (MxHost(host, 0, usable),))
        self._remember("[relayhost]", ttl, route)
        return route

    def _remember(self, domain: str, ttl: float, value: Route | DnsFailure) -> None:
        self._cache[domain] = (self.clock() + ttl, value)

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """Ask once; None for NOERROR/no data; raise DnsFailure for the rest."""
        try:
            return await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise DnsFailure(f"550 5.1.2 domain {name} does not exist (NXDOMAIN)", permanent=True) from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as ex:
            raise DnsFailure(f"451 4.4.3 DNS lookup of {name} {rdtype} failed: {type(ex).__name__}",
                             permanent=False) from None

    async def _addresses(self, name: str) -> tuple[tuple[str, ...], float]:
        results = await asyncio.gather(
            self._query(name, "A"), self._query(name, "AAAA"), return_exceptions=True
        )
        addresses: list[str] = []
        ttl = NEGATIVE_TTL
        failures = []
        for result in results:
            if isinstance(result, DnsFailure):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
            elif result is not None:
                ttl = min(ttl, float(result.rrset.ttl))
                addresses.extend(rdata.address for rdata in result)
        if not addresses and failures:
            transient = [f for f in failures if not f.permanent]
            raise (transient or failures)[0]
        return tuple(addresses), ttl

    async def _resolve(self, domain: str) -> Route:
        try:
            answer = await self._query(domain, "MX")
        except DnsFailure as failure:
            if failure.permanent:
                self._remember(domain, NEGATIVE_TTL, failure)
            raise
        if answer is None:
            # RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
            try:
                addresses, ttl = await self._addresses(domain)
            except DnsFailure as failure:
                if failure.permanent:
                    self._remember(domain, NEGATIVE_TTL, failure)
                raise
            if not addresses:
                failure = DnsFailure(f"550 5.1.2 domain {domain} has no MX and no address",
                                     permanent=True)
                self._remember(domain, NEGATIVE_TTL, failure)
                raise failure
            route = Route(domain, (MxHost(domain, 0, self._allowed(domain, addresses)),), implicit=True)
            self._remember(domain, ttl, route)
            return route
        ttl = float(answer.rrset.ttl)
        records = sorted(((r.preference, r.exchange) for r in answer), key=lambda item: item[0])
        if any(exchange == dns.name.root for _, exchange in records):
            # RFC 7505: a null MX means the domain accepts no mail at all.
            failure = DnsFailure(f"556 5.1.10 domain {domain} accepts no mail (null MX)",
                                 permanent=True)
            self._remember(domain, ttl, failure)
            raise failure
        lookups = await asyncio.gather(
            *(self._addresses(exchange.to_text(omit_final_dot=True).lower()) for _, exchange in records),
            return_exceptions=True,
        )
        hosts = []
        transient: DnsFailure | None = None
        for (preference, exchange), found in zip(records, lookups, strict=True):
            if isinstance(found, DnsFailure):
                transient = transient or (found if not found.permanent else None)
                continue
            if isinstance(found, BaseException):
                raise found
            addresses, address_ttl = found
            ttl = min(ttl, address_ttl)
            if addresses:
                name = exchange.to_text(omit_final_dot=True).lower()
                hosts.append(MxHost(name, preference, addresses))
        if not hosts:
            raise transient or DnsFailure(
                f"451 4.4.4 no MX host of {domain} has an address", permanent=False)
        allowed = tuple(
            MxHost(h.name, h.preference, self._allowed(domain, h.addresses, strict=False))
            for h in hosts
        )
        allowed = tuple(h for h in allowed if h.addresses)
        if not allowed:
            failure = DnsFailure(
                f"550 5.4.4 MX hosts of {domain} resolve only to addresses the relay may not use",
                permanent=True)
            self._remember(domain, ttl, failure)
            raise failure
        route = Route(domain, allowed)
        self._remember(domain, ttl, route)
        return route

    def _allowed(self, domain: str, addresses: tuple[str, ...], strict: bool = True) -> tuple[str, ...]:
        # APPSEC: never connect to loopback/private/link-local unless allowed.
        usable = tuple(a for a in addresses if self.config.address_allowed(a))
        if strict and not usable:
            failure = DnsFailure(
                f"550 5.4.4 {domain} resolves only to addresses the relay may not use",
                permanent=True)
            self._remember(domain, NEGATIVE_TTL, failure)
            raise failure
        return usable
