"""Benchmark: relay delivery throughput from the spool to Postfix smtp-sink.

Prints ONE JSON line. Measured in the same run, on the same machine:

* ``openssl_rsa2048_signs_per_s``: raw RSA-2048 PKCS#1 v1.5 signatures
  through ``cryptography`` (one core), the physical limit of signing;
* ``dkimpy_signs_per_s``: dkimpy signing the same 20 KB message (baseline);
* ``swiftmail_dkim_signs_per_s``: ``swiftmail_relay.dkim.sign`` on it;
* ``postfix_source_to_sink_per_s``: Postfix ``smtp-source`` to ``smtp-sink``
  (20 sessions, 20 KB), the physical limit of the SMTP path;
* ``intake_per_s``: DKIM-sign + durable spool write (group commit of 100),
  one process, as the in-process hand-off does it;
* ``delivery_per_s``: the relay delivering a pre-filled spool of signed
  20 KB HTML messages over loopback to ``smtp-sink`` (DNS on loopback);
* ``end_to_end_per_s``: intake in a second process while the relay
  delivers, from the first spool write to the last 250.

Medians of ``--rounds`` runs. Usage::

    .venv/bin/python bench/relay_throughput.py --messages 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from swiftmail_relay import dkim  # noqa: E402
from swiftmail_relay.config import RelayConfig  # noqa: E402
from swiftmail_relay.engine import Relay  # noqa: E402
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id  # noqa: E402

from bench._common import (  # noqa: E402
    Unfinished,
    arguments,
    free_port,
    median,
    ratio,
    require,
    run,
    start_sink,
    stop,
)
from swiftmail_core.settings import Settings  # noqa: E402
from swiftmail_core.testing.dns import DnsServer  # noqa: E402

DOMAIN = "sink.bench.example"
SENDER = "news.bench.example"


def html_message(index: int, size: int = 20 * 1024) -> bytes:
    """Return a ~20 KB HTML message with the headers a campaign mail has."""
    paragraph = "<p>Hello {name}, this is our weekly news with <a href=\"https://x.example/{i}\">" \
        "a link</a> and some text to fill the line.</p>\n"
    body = ""
    while len(body) < size:
        body += paragraph.format(name=f"reader{index}", i=len(body))
    headers = (
        f"From: News <news@{SENDER}>\r\nTo: <user{index}@{DOMAIN}>\r\nSubject: Weekly news {index}\r\n"
        f"Date: Fri, 27 Nov 2026 20:00:00 +0000\r\nMessage-ID: <{index}.{new_id()}@{SENDER}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"List-Unsubscribe: <https://u.example/{index}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n"
    )
    return headers.encode() + body.replace("\n", "\r\n").encode()


def rate(count: int, seconds: float) -> float:
    """Return count/seconds rounded."""
    return round(count / seconds, 1)


def measure_openssl(key: dkim.SigningKey, seconds: float) -> float:
    """RSA-2048 signatures per second through cryptography (one core)."""
    data = b"x" * 600
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg, union-attr]
        count += 1
    return rate(count, time.perf_counter() - started)


def measure_dkimpy(pem: bytes, message: bytes, seconds: float) -> float:
    """dkimpy signatures per second on one 20 KB message."""
    import dkim as dkimpy

    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dkimpy.sign(message, b"sm1", SENDER.encode(), pem,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
        count += 1
    return rate(count, time.perf_counter() - started)


def measure_ours(key: dkim.SigningKey, message: bytes, seconds: float) -> float:
    """swiftmail_relay.dkim signatures per second on one 20 KB message."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dkim.sign(message, [key])
        count += 1
    return rate(count, time.perf_counter() - started)


def measure_postfix(port: int, messages: int) -> float:
    """smtp-source to smtp-sink messages per second (20 sessions, 20 KB)."""
    started = time.perf_counter()
    subprocess.run([require("smtp-source"), "-s", "20", "-l", "20480", "-m", str(messages), "-f",
                    f"a@{SENDER}", "-t", f"b@{DOMAIN}", f"127.0.0.1:{port}"], check=True)
    return rate(messages, time.perf_counter() - started)


def fill(spool_dir: Path, pem: bytes, count: int, batch: int = 100) -> float:
    """Sign and durably spool ``count`` messages; return seconds taken."""
    spool = Spool(spool_dir)
    key = dkim.load_key(SENDER, "sm1", pem)
    templates = [html_message(i) for i in range(50)]
    started = time.perf_counter()
    for offset in range(0, count, batch):
        items = []
        for index in range(offset, min(count, offset + batch)):
            envelope = Envelope(id=new_id(), mail_from=f"bounces@{SENDER}",
                                recipients=[Recipient(f"user{index}@{DOMAIN}")],
                                sender_domain=SENDER)
            items.append((envelope, dkim.sign(templates[index % 50], [key])))
        spool.write_many(items)
    return time.perf_counter() - started


def _fill_process(spool_dir: str, pem: bytes, count: int) -> None:
    fill(Path(spool_dir), pem, count)


def make_relay(spool_dir: Path, dns_port: int, sink_port: int) -> Relay:
    """Build a relay delivering to the sink, DNS from the loopback server."""
    settings = Settings(data_dir=spool_dir.parent, dns_nameservers=("127.0.0.1",),
                        dns_port=dns_port)
    config = RelayConfig.from_settings(
        settings, spool_dir=str(spool_dir), smtp_port=sink_port, allow_networks="127.0.0.0/8",
        max_connections_per_site=20, messages_per_connection=1000, workers=64,
        scan_interval=0.2, hostname="bench.relay.test")
    return Relay(settings, config)


async def deliver(relay: Relay, expected: int, timeout: float,
                  producer: multiprocessing.process.BaseProcess | None = None) -> float:
    """Start the relay (then ``producer``) and wait until ``expected`` recipients are delivered.

    Raises Unfinished when the producer fails or ``timeout`` seconds pass first.
    """
    started = time.perf_counter()
    await relay.start()
    if producer is not None:
        # NOTE: after the relay's start, which clears the spool's tmp/ of half-written files.
        producer.start()
    deadline = started + timeout
    try:
        while relay.delivered < expected:
            if producer is not None and producer.exitcode not in (None, 0):
                raise Unfinished(f"the intake process exited with {producer.exitcode}")
            if time.perf_counter() > deadline:
                raise Unfinished(f"the relay delivered {relay.delivered} of {expected} "
                                 f"in {timeout:.0f} s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await relay.stop()


def run_round(workdir: Path, pem: bytes, messages: int, dns_port: int, sink_port: int,
              timeout: float) -> dict[str, float]:
    """One round: intake, delivery, end to end."""
    spool_dir = workdir / "spool"
    shutil.rmtree(spool_dir, ignore_errors=True)
    intake_seconds = fill(spool_dir, pem, messages)
    delivery_seconds = asyncio.run(deliver(make_relay(spool_dir, dns_port, sink_port),
                                           messages, timeout))
    shutil.rmtree(spool_dir, ignore_errors=True)
    Spool(spool_dir)
    producer = multiprocessing.get_context("fork").Process(
        target=_fill_process, args=(str(spool_dir), pem, messages))
    try:
        end_to_end = asyncio.run(deliver(make_relay(spool_dir, dns_port, sink_port), messages,
                                         timeout, producer))
    finally:
        producer.join(timeout=60)
    if producer.exitcode != 0:
        raise Unfinished(f"the intake process exited with {producer.exitcode}")
    return {
        "intake_per_s": rate(messages, intake_seconds),
        "delivery_per_s": rate(messages, delivery_seconds),
        "end_to_end_per_s": rate(messages, end_to_end),
    }


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Run the benchmark; return the figures."""
    import logging

    import structlog

    require("smtp-sink")
    require("smtp-source")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pem, _public = dkim.generate_rsa_pem()
    key = dkim.load_key(SENDER, "sm1", pem)
    sample = html_message(0)
    limits = {
        "openssl_rsa2048_signs_per_s": measure_openssl(key, args.sign_seconds),
        "dkimpy_signs_per_s": measure_dkimpy(pem, sample, args.sign_seconds),
        "swiftmail_dkim_signs_per_s": measure_ours(key, sample, args.sign_seconds),
    }
    dns = DnsServer().start()
    dns.add(DOMAIN, "MX", f"10 mx.{DOMAIN}.")
    dns.add(f"mx.{DOMAIN}", "A", "127.0.0.1")
    sink_port = free_port()
    sink = start_sink(sink_port)
    rounds = []
    postfix = []
    try:
        with tempfile.TemporaryDirectory(prefix="swiftmail-bench-") as directory:
            for _ in range(args.rounds):
                postfix.append(measure_postfix(sink_port, args.messages))
                rounds.append(run_round(Path(directory), pem, args.messages, dns.port,
                                        sink_port, args.timeout))
    finally:
        stop(sink)
        dns.stop()
    result: dict[str, Any] = {
        "messages": args.messages,
        "rounds": args.rounds,
        "message_bytes": len(sample),
        **limits,
        "postfix_source_to_sink_per_s": median(postfix),
    }
    for name in ("intake_per_s", "delivery_per_s", "end_to_end_per_s"):
        result[name] = median(r[name] for r in rounds)
    result["delivery_per_hour"] = int(result["delivery_per_s"] * 3600)
    result["end_to_end_per_hour"] = int(result["end_to_end_per_s"] * 3600)
    result["delivery_vs_postfix"] = ratio(result["delivery_per_s"],
                                          result["postfix_source_to_sink_per_s"])
    result["signing_vs_openssl"] = ratio(limits["swiftmail_dkim_signs_per_s"],
                                         limits["openssl_rsa2048_signs_per_s"])
    result["signing_vs_dkimpy"] = ratio(limits["swiftmail_dkim_signs_per_s"],
                                        limits["dkimpy_signs_per_s"], 1)
    return result


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"messages": 200, "rounds": 1, "sign_seconds": 0.2,
                                        "timeout": 60.0})
    options.add_argument("--messages", type=int, default=10000)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--sign-seconds", type=float, default=2.0,
                         help="how long each signing measurement runs")
    options.add_argument("--timeout", type=float, default=600.0,
                         help="seconds a delivery may take before the run counts as unfinished")
    return options


if __name__ == "__main__":
    run("relay_throughput", measure, parser())
