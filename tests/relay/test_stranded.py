"""No stranded mail: thousands of messages, every one reaches a final state.

Messages are handed off (durable spool writes announced in ``new/``, and
the in-process ``notify``) while the relay delivers, to several
destinations whose MX peers inject failures: permanent refusals, temporary
refusals that clear after a few tries, 421 closings of the connection, and
UTF-8 recipients the peers cannot take (no SMTPUTF8: a bounce, and once a
leaked connection slot that stalled the destination).
The default size is 3,000 messages (each failure kind recurs every 100, on
each of six destinations, through 30 hand-off batches per writer), which keeps
the main suite inside its budget; ``SWIFTMAIL_TEST_BIG=1`` runs 50,000.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import uuid

from swiftmail_relay import metrics
from swiftmail_relay.spool import BOUNCED, DELIVERED, Envelope, Recipient, new_id

RAW = b"From: news@sender.example\r\nTo: x@y\r\nSubject: s\r\n\r\nbody\r\n"
BIG = os.environ.get("SWIFTMAIL_TEST_BIG") == "1"
COUNT = 50_000 if BIG else 3_000
BATCH = 100


def _injector():  # type: ignore[no-untyped-def]
    """Return an RCPT reply function: permanent, temporary (twice), 421 (once), else ok."""
    tries: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def rcpt(address: str) -> str:
        local = address.partition("@")[0]
        with lock:
            tries[local] += 1
            seen = tries[local]
        if local.startswith("perm"):
            return "550 5.1.1 no such user"
        if local.startswith("temp") and seen <= 2:
            return "451 4.7.1 try again later"
        if local.startswith("close") and seen == 1:
            return "421 4.4.2 closing connection"
        return "250 2.1.5 ok"

    return rcpt


def _address(number: int, domain: str) -> str:
    kind = ("perm", "temp", "close", "ok", "ok", "ok", "ok", "ok", "ok", "ok")[number % 10]
    if number % 100 == 3:
        kind = "ütf"  # bounces: the peers offer no SMTPUTF8
    return f"{kind}{number}@{domain}"


BOUNCING = sum(1 for n in range(COUNT) if n % 10 == 0 or n % 100 == 3)


def test_every_message_reaches_a_final_state(dns_server, peers, relay_factory) -> None:  # type: ignore[no-untyped-def]
    found = peers(3, first=90)
    rcpt = _injector()
    domains = []
    for index, peer in enumerate(found * 2):
        peer.rcpt = rcpt
        domain = f"s{index}-{uuid.uuid4().hex[:8]}.example"
        dns_server.add(domain, "MX", f"10 mx.{domain}.")
        dns_server.add(f"mx.{domain}", "A", peer.host)
        domains.append(domain)
    relay = relay_factory(found[0].port, workers=32, max_connections_per_site=4,
                          messages_per_connection=50, retry_base=0.05, retry_cap=0.2,
                          scan_interval=0.05, overdue_after=10)
    overdue_before = metrics.OVERDUE._value.get()
    written: list[str] = []

    def hand_off(first: int, last: int, notify) -> None:  # type: ignore[no-untyped-def]
        for start in range(first, last, BATCH):
            items = []
            for number in range(start, min(start + BATCH, last)):
                address = _address(number, domains[number % len(domains)])
                items.append((Envelope(id=new_id(), mail_from="b@sender.example",
                                       recipients=[Recipient(address)],
                                       smtputf8=not address.isascii()), RAW))
            ids = relay.spool.write_many(items)
            written.extend(ids)
            if notify is not None:
                notify(ids)

    async def scenario() -> None:
        await relay.start()
        loop = asyncio.get_running_loop()
        try:
            # Half announced in new/ from another thread, half notified in-process.
            writer = loop.run_in_executor(None, hand_off, 0, COUNT // 2, None)

            def notify(ids: list[str]) -> None:
                loop.call_soon_threadsafe(relay.notify, ids)

            notifier = loop.run_in_executor(None, hand_off, COUNT // 2, COUNT, notify)
            await asyncio.gather(writer, notifier)
            deadline = loop.time() + (600 if BIG else 240)
            while len(relay.finals) < COUNT and loop.time() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await asyncio.wait_for(relay.stop(), 60)

    asyncio.run(scenario())
    finals = {envelope.id: envelope for envelope in relay.finals}
    stranded = [(q, [(r.address, r.attempts, r.last_reply) for r in e.recipients])
                for q, e in relay.envelopes.items()]
    assert len(written) == COUNT
    assert len(finals) == COUNT, (COUNT - len(finals), stranded[:10])
    statuses = collections.Counter(e.recipients[0].status for e in finals.values())
    assert statuses[BOUNCED] == BOUNCING
    assert statuses[DELIVERED] == COUNT - BOUNCING
    assert not list(relay.spool.scan())
    # Every message got there on its own wake-ups: the watchdog found none lost.
    assert metrics.OVERDUE._value.get() == overdue_before
