"""`swiftmail relay run` starts, listens, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_relay_run_listens_and_stops(test_environ, targets, tmp_path, run_id) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    metrics_port = _free_port()
    environ = {
        **os.environ, **test_environ,
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{port}",
        "SWIFTMAIL_PLUGIN_RELAY_TRUSTED_LISTENERS": f"127.0.0.1:{port}",
        "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"{run_id}:relay-run",
        "SWIFTMAIL_PLUGIN_RELAY_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "swiftmail_core.cli", "relay", "run"], cwd=ROOT, env=environ,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "relay did not listen"
                time.sleep(0.1)
        code, _ = client.ehlo()
        assert code == 250 and client.has_extn("auth")
        code, _ = client.mail("spammer@evil.example")
        assert code == 530  # never an open relay
        client.quit()
        while True:  # the metrics listener may come up just after the SMTP one
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=5) as page:
                    text = page.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "relay metrics did not listen"
                time.sleep(0.1)
        assert "swiftmail_relay_deliveries_total" in text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_a_second_deliverer_on_the_same_spool_refuses_to_start(test_environ, targets, tmp_path,
                                                               run_id) -> None:  # type: ignore[no-untyped-def]
    # Regression: a second `swiftmail relay` on the same spool delivered from it too.
    from swiftmail_relay.spool_lock import SpoolLock, deliverer_running

    spool = tmp_path / "spool"
    environ = {
        **os.environ, **test_environ,
        "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(spool),
        "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{_free_port()}",
        "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"{run_id}:relay-lock",
    }
    assert not deliverer_running(spool)
    held = SpoolLock(spool).acquire()  # a first deliverer
    try:
        assert deliverer_running(spool)
        second = subprocess.run(
            [sys.executable, "-m", "swiftmail_core.cli", "relay", "run"], cwd=ROOT, env=environ,
            capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert "already delivers from the spool" in second.stderr
        assert "--no-deliver" in second.stderr and "Traceback" not in second.stderr
    finally:
        held.release()
    assert not deliverer_running(spool)
