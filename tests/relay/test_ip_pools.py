"""IP pools: tenants and sending domains leave from their pool's loopback source addresses."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
import structlog
from aiosmtpd.controller import Controller
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.spool import Envelope, Recipient, new_id

from swiftmail_core.errors import ConfigurationError

MESSAGE = b"From: a@sender.example\r\nTo: u@x\r\nSubject: t\r\n\r\nhello\r\n"
TENANT_A, TENANT_B, TENANT_C = (str(uuid.uuid4()) for _ in range(3))


class PeerAddresses:
    """aiosmtpd handler noting which client address sent each message."""

    def __init__(self) -> None:
        self.by_recipient: dict[str, str] = {}

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        """Note the client address of every recipient."""
        for recipient in envelope.rcpt_tos:
            self.by_recipient[recipient] = session.peer[0]
        return "250 2.0.0 queued"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


POOLS = {
    "source_addresses": {"a2": "127.0.0.2", "a3": "127.0.0.3", "a4": "127.0.0.4"},
    "ip_pools": {"shared": ["a2"], "dedicated": ["a3"], "transactional": ["a4"]},
    "tenant_pools": {TENANT_A: "dedicated"},
    "domain_pools": {"receipts.b.example": "transactional"},
    "default_pool": "shared",
}


def test_each_tenant_and_domain_leaves_from_its_pool(dns_server, relay_factory) -> None:  # type: ignore[no-untyped-def]
    port = _free_port("127.0.0.45")
    handler = PeerAddresses()
    controller = Controller(handler, hostname="127.0.0.45", port=port, ready_timeout=5)
    controller.start()
    domain = f"p{uuid.uuid4().hex[:10]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", "127.0.0.45")
    relay = relay_factory(port, **POOLS)
    messages = [  # (tenant, From domain, recipient)
        (TENANT_A, "a.example", f"a@{domain}"),
        (TENANT_B, "b.example", f"b@{domain}"),
        (TENANT_B, "receipts.b.example", f"receipt@{domain}"),
        (TENANT_C, "c.example", f"c@{domain}"),
    ]

    async def scenario() -> None:
        await relay.start()
        try:
            ids = [relay.spool.write(Envelope(
                id=new_id(), mail_from=f"bounces@{sender}", tenant_id=tenant,
                sender_domain=sender, recipients=[Recipient(rcpt)]), MESSAGE)
                for tenant, sender, rcpt in messages]
            relay.notify(ids)
            deadline = asyncio.get_running_loop().time() + 30
            while len(relay.finals) < len(messages):
                assert asyncio.get_running_loop().time() < deadline, "relay did not finish"
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    try:
        with structlog.testing.capture_logs() as logs:
            asyncio.run(scenario())
    finally:
        controller.stop()
    assert handler.by_recipient == {
        f"a@{domain}": "127.0.0.3",  # tenant A's dedicated pool
        f"b@{domain}": "127.0.0.2",  # tenant B: the default pool
        f"receipt@{domain}": "127.0.0.4",  # the sending domain's pool wins
        f"c@{domain}": "127.0.0.2",
    }
    accepted = [e for e in logs if e["event"] == "message_accepted"]
    delivered = [e for e in logs if e["event"] == "message_delivered"]
    assert len(accepted) == 4 and len(delivered) == 4
    assert {e["tenant_id"] for e in delivered} == {TENANT_A, TENANT_B, TENANT_C}
    assert all(e["reply"].startswith("250") and e["recipient_domain"] == domain
               and e["queue_id"] for e in delivered)


def test_warm_up_is_counted_per_source_address(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay.shaping import RedisShaper

    from swiftmail_core.settings import Settings

    config = RelayConfig.from_settings(Settings(data_dir=tmp_path), **POOLS)
    import redis.asyncio

    # No command is sent.
    shaper = RedisShaper(config, redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0"))
    envelope = Envelope(id=new_id(), mail_from="", recipients=[])
    assert shaper._warmup_subjects(envelope, "a3")[0][0] == "ip:a3"
    assert shaper._warmup_subjects(envelope)[0][0] == "ip:default"


@pytest.mark.parametrize(("override", "message"), [
    ({"source_addresses": {"x": "not-an-ip"}}, "source_addresses.x"),
    ({"ip_pools": {"p": ["missing"]}}, "ip_pools.p"),
    ({"tenant_pools": {"t": "nope"}}, "tenant_pools.t"),
    ({"default_pool": "nope"}, "default_pool"),
])
def test_bad_pool_settings_name_the_key(tmp_path, override, message) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.settings import Settings

    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        RelayConfig.from_settings(Settings(data_dir=tmp_path), **{**POOLS, **override})
