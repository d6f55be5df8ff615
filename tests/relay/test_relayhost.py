"""The ``relayhost`` option: every domain goes to one smarthost, no MX lookup."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.mx import DnsFailure, MxResolver
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, new_id

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings

MESSAGE = b"From: a@sender.example\r\nTo: x@y\r\nSubject: t\r\n\r\nhello\r\n"


def _domain() -> str:
    return f"r{uuid.uuid4().hex[:10]}.example"


def test_relayhost_routes_every_domain_without_mx(tmp_path, dns_server) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, dns_nameservers=("127.0.0.1",),
                        dns_port=dns_server.port)
    smarthost = f"smarthost.{_domain()}"
    dns_server.add(smarthost, "A", "127.0.0.9")
    mx_domain = _domain()
    dns_server.add(mx_domain, "MX", f"10 mx.{mx_domain}.")  # ignored under a relayhost
    config = RelayConfig.from_settings(settings, relayhost=f"[{smarthost.upper()}]",
                                       allow_networks="127.0.0.0/8")
    assert config.relayhost == smarthost

    async def routes() -> list:  # type: ignore[type-arg]
        resolver = MxResolver(settings, config)
        return [await resolver.route(d) for d in (mx_domain, _domain(), "gmail.com")]

    for route in asyncio.run(routes()):
        assert [(h.name, h.addresses) for h in route.hosts] == [(smarthost, ("127.0.0.9",))]
        assert route.site == smarthost  # throttles count under the relayhost


def test_private_relayhost_needs_allow_networks(tmp_path, dns_server) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, dns_nameservers=("127.0.0.1",),
                        dns_port=dns_server.port)
    with pytest.raises(ConfigurationError, match="allow_networks"):
        RelayConfig.from_settings(settings, relayhost="127.0.0.1")
    with pytest.raises(ConfigurationError, match="allow_networks"):
        RelayConfig.from_settings(settings, relayhost="10.1.2.3")
    smarthost = f"smarthost.{_domain()}"
    dns_server.add(smarthost, "A", "192.168.7.7")
    config = RelayConfig.from_settings(settings, relayhost=smarthost)

    async def route() -> None:
        await MxResolver(settings, config).route(_domain())

    with pytest.raises(DnsFailure) as caught:
        asyncio.run(route())
    assert not caught.value.permanent and caught.value.reply.startswith("451 4.4.4")


def test_delivery_through_relayhost_to_a_loopback_sink(peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=80)
    relay = relay_factory(peer.port, relayhost=peer.host)
    addresses = [f"someone@{_domain()}", f"other@{_domain()}"]  # no DNS records at all

    async def scenario() -> None:
        await relay.start()
        try:
            envelope = Envelope(id=new_id(), mail_from="bounces@sender.example",
                                recipients=[Recipient(a) for a in addresses])
            relay.notify([relay.spool.write(envelope, MESSAGE)])
            deadline = asyncio.get_running_loop().time() + 20
            while not relay.finals:
                assert asyncio.get_running_loop().time() < deadline, "relay did not finish"
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (final,) = relay.finals
    assert [r.status for r in final.recipients] == [DELIVERED, DELIVERED]
    assert sorted(a for m in peer.messages for a in m.recipients) == sorted(addresses)
    assert b"hello" in peer.messages[0].data
