"""MX resolution against the loopback DNS server."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.mx import DnsFailure, MxResolver

from swiftmail_core.settings import Settings


def _resolver(dns_server, tmp_path, **overrides) -> MxResolver:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, dns_nameservers=("127.0.0.1",), dns_port=dns_server.port)
    config = RelayConfig.from_settings(
        settings, allow_networks="127.0.0.0/8", dns_timeout=overrides.pop("dns_timeout", 2.0),
        **overrides,
    )
    return MxResolver(settings, config, rng=random.Random(7))


def _domain() -> str:
    return f"m{uuid.uuid4().hex[:10]}.example"


def test_preference_order_and_equal_shuffle(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.add(domain, "MX", f"20 backup.{domain}.", f"10 a.{domain}.", f"10 b.{domain}.")
    for index, host in enumerate(("a", "b", "backup"), start=2):
        dns_server.add(f"{host}.{domain}", "A", f"127.0.0.{index}")
    resolver = _resolver(dns_server, tmp_path)
    seen = set()
    for _ in range(20):
        route = asyncio.run(resolver.route(domain))
        names = [host.name for host in route.hosts]
        assert names[-1] == f"backup.{domain}"
        seen.add(tuple(names[:2]))
    assert len(seen) == 2  # equal preferences are randomised
    assert route.site == ",".join(sorted(names))


def test_implicit_mx_uses_the_domain_address(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.add(domain, "A", "127.0.0.9")
    route = asyncio.run(_resolver(dns_server, tmp_path).route(domain))
    assert route.implicit and route.hosts[0].addresses == ("127.0.0.9",)


def test_null_mx_fails_permanently_with_556(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.null_mx(domain)
    with pytest.raises(DnsFailure) as caught:
        asyncio.run(_resolver(dns_server, tmp_path).route(domain))
    assert caught.value.permanent and caught.value.reply.startswith("556 5.1.10")


def test_nxdomain_is_permanent(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DnsFailure) as caught:
        asyncio.run(_resolver(dns_server, tmp_path).route(_domain()))
    assert caught.value.permanent


def test_servfail_is_transient(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.servfail.add(domain)
    with pytest.raises(DnsFailure) as caught:
        asyncio.run(_resolver(dns_server, tmp_path).route(domain))
    assert not caught.value.permanent and caught.value.reply.startswith("451")


def test_slow_answer_times_out_transiently(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.slow[domain] = 1.5
    with pytest.raises(DnsFailure) as caught:
        asyncio.run(_resolver(dns_server, tmp_path, dns_timeout=0.5).route(domain))
    assert not caught.value.permanent


def test_private_addresses_refused_unless_allowed(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", "10.1.2.3", "127.0.0.5")
    route = asyncio.run(_resolver(dns_server, tmp_path).route(domain))
    assert route.hosts[0].addresses == ("127.0.0.5",)
    strict = MxResolver(
        Settings(data_dir=tmp_path, dns_nameservers=("127.0.0.1",), dns_port=dns_server.port),
        RelayConfig.from_settings(Settings(data_dir=tmp_path)),
    )
    with pytest.raises(DnsFailure) as caught:
        asyncio.run(strict.route(domain))
    assert caught.value.permanent


def test_answers_are_cached_by_ttl(dns_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", "127.0.0.6")
    now = [1000.0]
    resolver = _resolver(dns_server, tmp_path)
    resolver.clock = lambda: now[0]

    async def twice() -> None:
        await resolver.route(domain)
        await resolver.route(domain)

    asyncio.run(twice())
    assert dns_server.queries.count((domain, "MX")) == 1
    now[0] += dns_server.ttl + 1
    asyncio.run(resolver.route(domain))
    assert dns_server.queries.count((domain, "MX")) == 2
