"""A SIGTERM (``make test-cluster``'s timeout) still removes the run's namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import netns

REPO = Path(__file__).resolve().parents[2]


def _our_namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False).stdout.splitlines()
    return [line.split()[0] for line in listed if line.startswith(prefix)]


def test_a_terminated_run_removes_its_namespaces_and_their_processes(tmp_path: Path) -> None:
    reason = netns.available()
    assert reason is None, reason
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
         f"--basetemp={tmp_path / 'child'}", "tests/cluster/sigterm_child.py"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "SWIFTMAIL_TEST_CLUSTER": "1"})
    prefix = ""
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        for line in child.stdout:
            if line.startswith("READY "):
                prefix = line.split()[1]
                break
            assert time.monotonic() < deadline, "the child never got its network"
        assert prefix and _our_namespaces(prefix), "the child's namespaces were not made"
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        assert _our_namespaces(prefix) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if prefix:
            for name in _our_namespaces(prefix):
                netns.kill_inside(name)
                subprocess.run(["ip", "netns", "del", name], check=False)
