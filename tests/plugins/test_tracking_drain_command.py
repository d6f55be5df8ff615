"""`swiftmail tracking drain` stops cleanly on SIGTERM (systemd) and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_drainer_exits_zero_on_stop_signals(test_environ, runtime, run_id, signum) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, **test_environ,
           "SWIFTMAIL_PLUGIN_TRACKING_STREAM": f"swiftmail-test-{run_id}:drain-cmd"}
    process = subprocess.Popen(
        [sys.executable, "-m", "swiftmail_core.cli", "tracking", "drain", "--consumer", "t1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "draining" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        assert "draining" in line
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        assert "drainer stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
