"""PIPELINING (RFC 2920) against real SMTP peers on loopback."""

from __future__ import annotations

import asyncio
import uuid

from swiftmail_relay.spool import BOUNCED, DELIVERED

from tests.relay.peers import SmtpPeer
from tests.relay.test_delivery import MESSAGE, _run, _status


class PipeliningPeer(SmtpPeer):
    """A scripted peer that advertises PIPELINING and records each TCP read."""

    def __init__(self, host: str, port: int = 0, *, pipelining: bool = True) -> None:
        super().__init__(host, port)
        self.pipelining = pipelining
        self.reads: list[bytes] = []

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Every chunk the transport read reaches the StreamReader through
        # feed_data: record them to see how the client's commands arrived.
        feed = reader.feed_data

        def record(data: bytes) -> None:
            self.reads.append(bytes(data))
            feed(data)

        reader.feed_data = record  # type: ignore[method-assign]
        if self.pipelining:
            write = writer.write

            def advertise(data: bytes) -> None:
                if data.startswith(b"250-peer.test\r\n"):
                    data = data.replace(b"250-peer.test\r\n", b"250-peer.test\r\n250-PIPELINING\r\n")
                write(data)

            writer.write = advertise  # type: ignore[method-assign]
        await super()._session(reader, writer)

    @property
    def transcript(self) -> bytes:
        """Return every byte the peer received, in order."""
        return b"".join(self.reads)


def _start(peers_list: list[SmtpPeer], first: int, *, pipelining: bool = True) -> PipeliningPeer:
    for _ in range(20):
        try:
            peer = PipeliningPeer(f"127.0.0.{first}", pipelining=pipelining).start()
        except OSError:
            continue
        peers_list.append(peer)
        return peer
    raise RuntimeError("no free port for the test MX peer")


def _setup(dns_server, request, *, pipelining: bool = True):  # type: ignore[no-untyped-def]
    started: list[SmtpPeer] = []
    request.addfinalizer(lambda: [p.stop() for p in started])
    peer = _start(started, 90, pipelining=pipelining)
    domain = f"p{uuid.uuid4().hex[:10]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    return peer, domain


def test_pipelined_transaction_in_one_read(dns_server, relay_factory, request) -> None:  # type: ignore[no-untyped-def]
    peer, domain = _setup(dns_server, request)
    addresses = [f"u{i}@{domain}" for i in range(3)]
    finals = _run(relay_factory(peer.port), addresses, until=1)
    assert _status(finals[0]) == [DELIVERED] * 3
    assert sorted(peer.recipients) == sorted(addresses)
    assert len(peer.messages) == 1 and b"hello" in peer.messages[0].data
    (batch,) = [read for read in peer.reads if b"MAIL FROM:" in read]
    assert batch.count(b"RCPT TO:") == 3 and batch.endswith(b"DATA\r\n")
    assert batch.startswith(b"MAIL FROM:<")


def test_one_recipient_refused(dns_server, relay_factory, request) -> None:  # type: ignore[no-untyped-def]
    peer, domain = _setup(dns_server, request)
    peer.rcpt = lambda a: "550 5.1.1 no such user" if a.startswith("bad") else "250 2.1.5 ok"
    addresses = [f"a@{domain}", f"bad@{domain}", f"c@{domain}"]
    finals = _run(relay_factory(peer.port), addresses, until=1)
    by_address = {r.address: r for r in finals[0].recipients}
    assert by_address[f"bad@{domain}"].status == BOUNCED
    assert by_address[f"bad@{domain}"].last_reply.startswith("550 5.1.1")
    assert by_address[f"a@{domain}"].status == DELIVERED
    assert by_address[f"c@{domain}"].status == DELIVERED
    assert peer.recipients == [f"a@{domain}", f"c@{domain}"]


def test_all_recipients_refused_sends_only_the_dot(dns_server, relay_factory, request) -> None:  # type: ignore[no-untyped-def]
    peer, domain = _setup(dns_server, request)
    peer.rcpt = lambda a: "550 5.1.1 no such user"
    peer.data_reply = lambda data: "554 5.5.1 no valid recipients"
    addresses = [f"x{i}@{domain}" for i in range(3)]
    finals = _run(relay_factory(peer.port), addresses, until=1)
    for recipient in finals[0].recipients:
        assert recipient.status == BOUNCED and recipient.last_reply.startswith("550 5.1.1")
    transcript = peer.transcript
    assert b"DATA\r\n.\r\n" in transcript
    assert MESSAGE.split(b"\r\n")[0] not in transcript and peer.messages == []


def test_mail_refused_answers_every_recipient(dns_server, relay_factory, request) -> None:  # type: ignore[no-untyped-def]
    peer, domain = _setup(dns_server, request)
    peer.mail_reply = lambda sender: "550 5.7.1 sender refused"
    addresses = [f"m{i}@{domain}" for i in range(3)]
    finals = _run(relay_factory(peer.port), addresses, until=1)
    for recipient in finals[0].recipients:
        assert recipient.status == BOUNCED and recipient.last_reply.startswith("550 5.7.1")
    # This lax peer still answers 354 to DATA: only the dot may follow.
    assert b"DATA\r\n.\r\n" in peer.transcript
    assert MESSAGE.split(b"\r\n")[0] not in peer.transcript


def test_peer_without_pipelining(dns_server, relay_factory, request) -> None:  # type: ignore[no-untyped-def]
    peer, domain = _setup(dns_server, request, pipelining=False)
    addresses = [f"n{i}@{domain}" for i in range(2)]
    finals = _run(relay_factory(peer.port), addresses, until=1)
    assert _status(finals[0]) == [DELIVERED] * 2
    assert sorted(peer.recipients) == sorted(addresses)
    (mail,) = [read for read in peer.reads if b"MAIL FROM:" in read]
    assert b"RCPT" not in mail and b"DATA" not in mail


def _raw_pipelining_exchange(mode: str, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    """Deliver to a raw server that sends every pipelined reply at once or byte by byte."""
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.delivery import Deliverer
    from swiftmail_relay.mx import MxHost, Route

    from swiftmail_core.settings import Settings

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-raw\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        batch = b""
        while b"DATA\r\n" not in batch:
            batch += await reader.read(65536)
        replies = [b"250 2.1.0 ok\r\n"]
        for index in range(batch.count(b"RCPT TO:")):
            # Multi-line accepts interleaved with refusals.
            replies.append(b"250-2.1.5 one\r\n250 2.1.5 ok\r\n" if index % 2
                           else b"550 5.1.1 no such user\r\n")
        blob = b"".join(replies) + b"354 go ahead\r\n"
        if mode == "together":
            writer.write(blob)
        else:
            for index in range(len(blob)):
                writer.write(blob[index:index + 1])
                await writer.drain()
                await asyncio.sleep(0)
        body = b""
        while not body.endswith(b"\r\n.\r\n"):
            body += await reader.read(65536)
        writer.write(b"250 2.0.0 queued\r\n")
        await reader.readline()
        writer.write(b"221 2.0.0 bye\r\n")
        writer.close()

    async def scenario() -> dict:
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = RelayConfig.from_settings(
            Settings(data_dir=tmp_path), spool_dir=str(tmp_path / "spool"), smtp_port=port,
            allow_networks="127.0.0.0/8", hostname="relay.test", connect_timeout=2,
            command_timeout=3)
        deliverer = Deliverer(config)
        route = Route("raw.example", (MxHost("mx.raw.example", 10, ("127.0.0.1",)),))
        try:
            return await deliverer.send(route, "b@sender.example",
                                        [f"r{i}@raw.example" for i in range(5)], MESSAGE)
        finally:
            await deliverer.close()
            server.close()

    return asyncio.run(scenario())


def test_replies_together_or_split_pair_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for mode in ("together", "bytewise"):
        replies = _raw_pipelining_exchange(mode, tmp_path)
        assert {a: r.code for a, r in replies.items()} == {
            "r0@raw.example": 550, "r1@raw.example": 250, "r2@raw.example": 550,
            "r3@raw.example": 250, "r4@raw.example": 550}, mode
        assert replies["r1@raw.example"].text == "2.0.0 queued", mode
