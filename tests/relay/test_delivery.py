"""Delivery against real SMTP peers on loopback, routed by the loopback DNS."""

from __future__ import annotations

import asyncio
import uuid

from swiftmail_relay.spool import BOUNCED, DELIVERED, EXPIRED, Envelope, Recipient, new_id

MESSAGE = b"From: a@sender.example\r\nTo: x@y\r\nSubject: t\r\n\r\nhello\r\n"


def _domain() -> str:
    return f"r{uuid.uuid4().hex[:10]}.example"


def _spool(relay, *addresses: str, raw: bytes = MESSAGE) -> str:  # type: ignore[no-untyped-def]
    envelope = Envelope(id=new_id(), mail_from="bounces@sender.example",
                        recipients=[Recipient(a) for a in addresses])
    return relay.spool.write(envelope, raw)


def _run(relay, *addresses_groups, until: int, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        await relay.start()
        try:
            ids = [_spool(relay, *group) for group in addresses_groups]
            relay.notify(ids)
            deadline = asyncio.get_running_loop().time() + timeout
            while len(relay.finals) < until:
                assert asyncio.get_running_loop().time() < deadline, "relay did not finish"
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    return relay.finals


def _status(final) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.status for r in final.recipients]


def test_mx_order_and_fallback(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    primary, secondary, backup = peers(3)
    primary.greeting = "421 4.3.2 service not available"
    domain = _domain()
    dns_server.add(domain, "MX", f"5 dead.{domain}.", f"10 p.{domain}.", f"20 s.{domain}.",
                   f"30 b.{domain}.")
    dns_server.add(f"dead.{domain}", "A", "127.0.0.250")  # nothing listens there
    dns_server.add(f"p.{domain}", "A", primary.host)
    dns_server.add(f"s.{domain}", "A", secondary.host)
    dns_server.add(f"b.{domain}", "A", backup.host)
    finals = _run(relay_factory(primary.port), [f"u@{domain}"], until=1)
    assert _status(finals[0]) == [DELIVERED]
    assert primary.connections == 1 and secondary.recipients == [f"u@{domain}"]
    assert backup.connections == 0


def test_implicit_mx(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=20)
    domain = _domain()
    dns_server.add(domain, "A", peer.host)
    finals = _run(relay_factory(peer.port), [f"u@{domain}"], until=1)
    assert _status(finals[0]) == [DELIVERED] and peer.recipients == [f"u@{domain}"]


def test_null_mx_bounces_at_once(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=21)
    domain = _domain()
    dns_server.null_mx(domain)
    finals = _run(relay_factory(peer.port), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == BOUNCED and recipient.last_reply.startswith("556 5.1.10")
    assert recipient.attempts == 1


def test_retry_then_success(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=22)
    calls = []

    def rcpt(address: str) -> str:
        calls.append(address)
        return "451 4.3.0 try again" if len(calls) == 1 else "250 2.1.5 ok"

    peer.rcpt = rcpt
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    finals = _run(relay_factory(peer.port), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == DELIVERED and recipient.attempts == 2


def test_5xx_to_rcpt_bounces_without_trying_next_mx(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    primary, backup = peers(2, first=23)
    primary.rcpt = lambda address: "550 5.1.1 no such user"
    domain = _domain()
    dns_server.add(domain, "MX", f"10 p.{domain}.", f"20 b.{domain}.")
    dns_server.add(f"p.{domain}", "A", primary.host)
    dns_server.add(f"b.{domain}", "A", backup.host)
    finals = _run(relay_factory(primary.port), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == BOUNCED and recipient.bounce_class == "hard"
    assert backup.connections == 0


def test_tls_failure_retries_in_clear_and_remembers(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=25)
    peer.starttls = True
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port, max_connections_per_site=1, messages_per_connection=1)
    finals = _run(relay, [f"u1@{domain}"], [f"u2@{domain}"], until=2)
    assert [s for f in finals for s in _status(f)] == [DELIVERED, DELIVERED]
    assert peer.tls_attempts == 1 and len(peer.messages) == 2


def test_disconnect_mid_data_defers_then_delivers(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=26)
    peer.on_data = "disconnect"
    original = peer.rcpt

    def rcpt(address: str) -> str:
        if peer.connections >= 2:
            peer.on_data = "accept"
        return original(address)

    peer.rcpt = rcpt
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    finals = _run(relay_factory(peer.port), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == DELIVERED and recipient.attempts == 2


def test_same_domain_recipients_share_a_transaction(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=27)
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    addresses = [f"u{i}@{domain}" for i in range(3)]
    _run(relay_factory(peer.port), addresses, until=1)
    assert len(peer.messages) == 1 and sorted(peer.messages[0].recipients) == addresses


def test_connection_reuse_with_cap(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=28)
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port, max_connections_per_site=1, messages_per_connection=3)
    _run(relay, *[[f"u{i}@{domain}"] for i in range(6)], until=6)
    assert len(peer.messages) == 6
    assert peer.connections == 2 and peer.max_open == 1


def test_421_on_reused_connection_reconnects(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=29)
    sent = []

    def mail(sender: str) -> str:
        sent.append(sender)
        return "421 4.7.0 closing" if len(sent) == 2 else "250 2.1.0 ok"

    peer.mail_reply = mail
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port, max_connections_per_site=1, workers=1)
    finals = _run(relay, [f"u1@{domain}"], [f"u2@{domain}"], until=2)
    assert all(_status(f) == [DELIVERED] for f in finals)
    assert all(r.attempts == 1 for f in finals for r in f.recipients)
    assert peer.connections == 2


def test_expiry_is_not_a_hard_bounce(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=30)
    peer.rcpt = lambda address: "451 4.3.0 later"
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    finals = _run(relay_factory(peer.port, max_age=1.0, retry_base=0.3), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == EXPIRED and recipient.bounce_class == "expired"
    assert recipient.attempts >= 1


def test_rescan_on_start_resumes_spooled_mail(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=31)
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port)
    for index in range(5):
        _spool(relay, f"u{index}@{domain}")

    async def scenario() -> None:
        await relay.start()
        try:
            await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert len(peer.messages) == 5 and list(relay.spool.scan()) == []


def test_stalled_peer_times_out_and_retries(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=32)
    peer.on_data = "stall"
    original = peer.rcpt

    def rcpt(address: str) -> str:
        if peer.connections >= 2:
            peer.on_data = "accept"
        return original(address)

    peer.rcpt = rcpt
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    finals = _run(relay_factory(peer.port, command_timeout=1), [f"u@{domain}"], until=1)
    recipient = finals[0].recipients[0]
    assert recipient.status == DELIVERED and recipient.attempts == 2


def test_cli_retry_control_file_is_applied(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay import queue_ops

    (peer,) = peers(1, first=33)
    calls = []

    def rcpt(address: str) -> str:
        calls.append(address)
        return "451 4.3.0 later" if len(calls) == 1 else "250 2.1.5 ok"

    peer.rcpt = rcpt
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port, retry_base=3600, retry_cap=3600)

    async def scenario() -> None:
        await relay.start()
        try:
            relay.notify([_spool(relay, f"u@{domain}")])
            await relay.idle(20)
            assert not relay.finals  # deferred for an hour
            queue_ops.retry(relay.spool, queue_ops.Selector(domain=domain))
            await relay.scan_once()
            for _ in range(500):
                if relay.finals:
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert _status(relay.finals[0]) == [DELIVERED]


def test_dot_stuffing_of_crlf_mail_equals_the_general_path() -> None:
    """The CRLF fast path stuffs exactly as the general conversion does."""
    import itertools

    from swiftmail_relay.delivery import _BARE_CR, dot_stuff
    from swiftmail_relay.dkim import to_crlf

    def general(message: bytes) -> bytes:
        data = _BARE_CR.sub(b"\r\n", to_crlf(message))
        data = (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")
        return (data if data.endswith(b"\r\n") else data + b"\r\n") + b".\r\n"

    for size in range(7):
        for parts in itertools.product((b"\r", b"\n", b".", b"a", b"\r\n"), repeat=size):
            message = b"".join(parts)
            assert dot_stuff(message) == general(message), message
            if message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n"):
                # What the hand-off spools, flagged ``Envelope.crlf``: the check is skipped.
                assert dot_stuff(message, crlf=True) == general(message), message


def test_dot_stuffing_and_line_endings_survive(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay.delivery import dot_stuff

    assert dot_stuff(b".a\r\n.\r\nb\nc\rd") == b"..a\r\n..\r\nb\r\nc\r\nd\r\n.\r\n"
    (peer,) = peers(1, first=34)
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    raw = b"From: a@sender.example\r\nSubject: dots\r\n\r\n.leading dot\r\n.\r\n..two\r\nend\r\n"
    relay = relay_factory(peer.port)

    async def scenario() -> None:
        await relay.start()
        try:
            envelope = Envelope(id=new_id(), mail_from="b@sender.example",
                                recipients=[Recipient(f"u@{domain}")])
            relay.notify([relay.spool.write(envelope, raw)])
            await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    (received,) = peer.messages
    assert received.data == raw


def test_a_handoff_message_is_delivered_without_the_line_ending_check(  # type: ignore[no-untyped-def]
        dns_server, peers, relay_factory, monkeypatch) -> None:
    """``Envelope.crlf`` (set by the platform hand-off) reaches DATA: the line-ending
    check is skipped for it, not for other mail, and the dots are stuffed either way."""
    from swiftmail_relay import delivery

    seen: list[bool] = []
    original = delivery.dot_stuff

    def recording(message: bytes, *, crlf: bool = False) -> bytes:
        seen.append(crlf)
        return original(message, crlf=crlf)

    monkeypatch.setattr(delivery, "dot_stuff", recording)
    (peer,) = peers(1, first=36)
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    raw = b"From: a@sender.example\r\nSubject: dots\r\n\r\n.leading dot\r\n.\r\n..two\r\nend\r\n"
    relay = relay_factory(peer.port)

    async def scenario() -> None:
        await relay.start()
        try:
            for crlf in (True, False):
                envelope = Envelope(id=new_id(), mail_from="b@sender.example",
                                    recipients=[Recipient(f"u@{domain}")], crlf=crlf)
                relay.notify([relay.spool.write(envelope, raw)])
                await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert [m.data for m in peer.messages] == [raw, raw]
    assert seen == [True, False]


def test_other_process_mail_hold_and_release(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay import queue_ops

    (peer,) = peers(1, first=35)
    accept = {"on": False}
    peer.rcpt = lambda address: "250 2.1.5 ok" if accept["on"] else "451 4.3.0 later"
    domain = _domain()
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    relay = relay_factory(peer.port, retry_base=0.2, retry_cap=0.3)

    async def scenario() -> None:
        await relay.start()
        try:
            _spool(relay, f"u@{domain}")  # as another process would: no notify
            for _ in range(200):
                if relay.envelopes and next(iter(relay.envelopes.values())).recipients[0].attempts:
                    break
                await asyncio.sleep(0.02)
            assert relay.envelopes, "announced message not picked up"
            assert queue_ops.hold(relay.spool, queue_ops.Selector(domain=domain)) == 1
            await relay.scan_once(full=True)
            assert not relay.envelopes  # held: forgotten by the running relay
            accept["on"] = True
            await asyncio.sleep(0.5)
            assert not peer.messages  # nothing delivered while held
            assert queue_ops.release(relay.spool, queue_ops.Selector(domain=domain)) == 1
            await relay.scan_once(full=True)
            await relay.idle(20)
        finally:
            await relay.stop()

    asyncio.run(scenario())
    assert peer.recipients == [f"u@{domain}"]
