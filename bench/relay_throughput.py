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
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from swiftmail_relay import dkim  # noqa: E402
from swiftmail_relay.config import RelayConfig  # noqa: E402
from swiftmail_relay.engine import Relay  # noqa: E402
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id  # noqa: E402

from swiftmail_core.settings import Settings  # noqa: E402
from tests.relay.dnsserver import DnsServer  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
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


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rate(count: int, seconds: float) -> float:
    """Return count/seconds rounded."""
    return round(count / seconds, 1)


def measure_openssl(key: dkim.SigningKey, seconds: float = 2.0) -> float:
    """RSA-2048 signatures per second through cryptography (one core)."""
    data = b"x" * 600
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg, union-attr]
        count += 1
    return rate(count, time.perf_counter() - started)


def measure_dkimpy(pem: bytes, message: bytes, seconds: float = 2.0) -> float:
    """dkimpy signatures per second on one 20 KB message."""
    import dkim as dkimpy

    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dkimpy.sign(message, b"sm1", SENDER.encode(), pem,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
        count += 1
    return rate(count, time.perf_counter() - started)


def measure_ours(key: dkim.SigningKey, message: bytes, seconds: float = 2.0) -> float:
    """swiftmail_relay.dkim signatures per second on one 20 KB message."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dkim.sign(message, [key])
        count += 1
    return rate(count, time.perf_counter() - started)


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """Start Postfix smtp-sink on 127.0.0.1:port."""
    process = subprocess.Popen(
        [SINK, "-u", "nobody", "-m", "200", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtp-sink did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


def measure_postfix(port: int, messages: int) -> float:
    """smtp-source to smtp-sink messages per second (20 sessions, 20 KB)."""
    started = time.perf_counter()
    subprocess.run([SOURCE, "-s", "20", "-l", "20480", "-m", str(messages), "-f",
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


async def deliver(relay: Relay, expected: int, timeout: float = 600.0) -> float:
    """Start the relay and wait until ``expected`` recipients are delivered."""
    started = time.perf_counter()
    await relay.start()
    deadline = started + timeout
    while relay.delivered < expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"delivered {relay.delivered} of {expected}")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await relay.stop()
    return elapsed


def run_round(workdir: Path, pem: bytes, messages: int, dns_port: int, sink_port: int) -> dict[str, float]:
    """One round: intake, delivery, end to end."""
    spool_dir = workdir / "spool"
    shutil.rmtree(spool_dir, ignore_errors=True)
    intake_seconds = fill(spool_dir, pem, messages)
    delivery_seconds = asyncio.run(deliver(make_relay(spool_dir, dns_port, sink_port), messages))
    shutil.rmtree(spool_dir, ignore_errors=True)
    Spool(spool_dir)
    producer = multiprocessing.get_context("fork").Process(
        target=_fill_process, args=(str(spool_dir), pem, messages))
    started = time.perf_counter()
    producer.start()
    asyncio.run(deliver(make_relay(spool_dir, dns_port, sink_port), messages))
    producer.join()
    end_to_end = time.perf_counter() - started
    return {
        "intake_per_s": rate(messages, intake_seconds),
        "delivery_per_s": rate(messages, delivery_seconds),
        "end_to_end_per_s": rate(messages, end_to_end),
    }


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pem, _public = dkim.generate_rsa_pem()
    key = dkim.load_key(SENDER, "sm1", pem)
    sample = html_message(0)
    limits = {
        "openssl_rsa2048_signs_per_s": measure_openssl(key),
        "dkimpy_signs_per_s": measure_dkimpy(pem, sample),
        "swiftmail_dkim_signs_per_s": measure_ours(key, sample),
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
                rounds.append(run_round(Path(directory), pem, args.messages, dns.port, sink_port))
    finally:
        stop(sink)
        dns.stop()
    result: dict[str, object] = {
        "benchmark": "relay_throughput",
        "messages": args.messages,
        "rounds": args.rounds,
        "message_bytes": len(sample),
        "cpus": os.cpu_count(),
        **limits,
        "postfix_source_to_sink_per_s": statistics.median(postfix),
    }
    for name in ("intake_per_s", "delivery_per_s", "end_to_end_per_s"):
        result[name] = statistics.median(r[name] for r in rounds)
    result["delivery_per_hour"] = int(float(result["delivery_per_s"]) * 3600)  # type: ignore[arg-type]
    result["end_to_end_per_hour"] = int(float(result["end_to_end_per_s"]) * 3600)  # type: ignore[arg-type]
    result["delivery_vs_postfix"] = round(
        float(result["delivery_per_s"]) / float(result["postfix_source_to_sink_per_s"]), 3)  # type: ignore[arg-type]
    result["signing_vs_openssl"] = round(
        limits["swiftmail_dkim_signs_per_s"] / limits["openssl_rsa2048_signs_per_s"], 3)
    result["signing_vs_dkimpy"] = round(
        limits["swiftmail_dkim_signs_per_s"] / limits["dkimpy_signs_per_s"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
