"""Crash safety: every message that got 250 is delivered despite kill -9.

Submits 1,000 messages to a relay child process, SIGKILLs it at random
points several times, restarts it on the same spool, and checks at the
receiving MX that every accepted message arrived (at-least-once); the
number of duplicates is reported, not asserted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(options: dict) -> subprocess.Popen[bytes]:  # type: ignore[type-arg]
    log = Path(options["data_dir"]) / f"child-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.relay.crash_child", json.dumps(options)],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b"ready" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_kill_dash_nine_loses_no_accepted_message(dns_server, peers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (peer,) = peers(1, first=70)
    domain = f"c{uuid.uuid4().hex[:8]}.example"
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", peer.host)
    options = {"data_dir": str(tmp_path), "spool_dir": str(tmp_path / "spool"),
               "dns_port": dns_server.port, "smtp_port": peer.port, "listen_port": _free_port()}
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    accepted: set[str] = set()
    kills, total = 0, 1000
    process = _start(options)
    try:
        while len(accepted) < total:
            killer = None
            if kills < 5:
                # SIGKILL at a random moment: mid-transaction, mid-delivery, mid-fsync.
                killer = threading.Timer(rng.uniform(0.1, 0.5), os.kill,
                                         args=(process.pid, signal.SIGKILL))
                killer.start()
            try:
                client = smtplib.SMTP("127.0.0.1", options["listen_port"], timeout=10)
                client.login("app", "any")
                while len(accepted) < total:
                    marker = uuid.uuid4().hex
                    message = (f"From: app@sender.example\r\nTo: u@{domain}\r\n"
                               f"Subject: {marker}\r\nMessage-ID: <{marker}@sender.example>\r\n"
                               f"\r\nbody {marker}\r\n")
                    client.sendmail("app@sender.example", [f"u@{domain}"], message)
                    accepted.add(marker)  # only after the 250
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the relay died under us; this message never got its 250
            if killer is not None:
                killer.join()
            if process.poll() is not None or killer is not None:
                process.wait()
                kills += 1
                process = _start(options)
        deadline = time.monotonic() + 120
        spool = tmp_path / "spool" / "queue"
        while time.monotonic() < deadline:
            if not any(spool.glob("*.msg")):
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
    received = [m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                for m in peer.messages]
    missing = accepted - set(received)
    duplicates = len(received) - len(set(received))
    print(f"crash test: accepted={len(accepted)} kills={kills} received={len(received)} "
          f"duplicates={duplicates} missing={len(missing)}")
    assert kills >= 4
    assert not missing
