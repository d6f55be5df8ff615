"""The sink host of the cluster test: an aiosmtpd sink and the DNS server naming it.

Usage: python -m tests.cluster.sink_host ADDRESS DOMAIN LOG

Answers DNS on ADDRESS (a free port, UDP and TCP) with ``DOMAIN MX 10
mx.DOMAIN`` and ``mx.DOMAIN A ADDRESS``, and accepts every message on
ADDRESS:25, appending one line ``<unix time> <client address> <recipient> <MAIL time>``
per accepted recipient to LOG (flushed at once, so a reader counts
deliveries as they happen; the MAIL time is when the relay began the
transaction, right after its rate admission), and each new peak of open connections to LOG with suffix
``.peak``. Prints ``{"dns_port": N}`` once both listen, then serves until killed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from swiftmail_core.testing.dns import DnsServer


class _Counting:
    """aiosmtpd handler: record each accepted recipient with the time."""

    def __init__(self, log: Path) -> None:
        self.lock = threading.Lock()
        self.handle = log.open("a", buffering=1)

    async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.began = time.time()
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        with self.lock:
            now = time.time()
            began = getattr(envelope, "began", now)
            for recipient in envelope.rcpt_tos:
                self.handle.write(f"{now:.3f} {session.peer[0]} {recipient.lower()} "
                                  f"{began:.3f}\n")
        return "250 2.0.0 queued"


class _Peak:
    """Open SMTP connections now and at most; each new peak appended to a file."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.Lock()
        self.open = self.peak = 0
        self.path = path

    def change(self, delta: int) -> None:
        """Count a connection opened (+1) or closed (-1)."""
        with self.lock:
            self.open += delta
            if self.open > self.peak:
                self.peak = self.open
                with self.path.open("a") as handle:
                    handle.write(f"{self.peak}\n")


def main(address: str, domain: str, log: str) -> None:
    """Serve DNS and SMTP on ``address`` until killed."""
    dns = DnsServer(host=address, ttl=3600).start()
    dns.add(domain, "MX", f"10 mx.{domain}.")
    dns.add(f"mx.{domain}", "A", address)
    peak = _Peak(Path(log).with_suffix(".peak"))

    class PeakSMTP(SMTP):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            peak.change(+1)
            super().connection_made(transport)

        def connection_lost(self, error):  # type: ignore[no-untyped-def]
            peak.change(-1)
            super().connection_lost(error)

    class PeakController(Controller):
        def factory(self) -> SMTP:
            return PeakSMTP(self.handler, **self.SMTP_kwargs)

    smtp = PeakController(_Counting(Path(log)), hostname=address, port=25)
    smtp.start()
    print(json.dumps({"dns_port": dns.port}), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(*sys.argv[1:4])
