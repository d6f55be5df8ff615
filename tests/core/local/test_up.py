"""`swiftmail up` runs every process, catches outgoing mail locally, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from swiftmail_core.apikeys import create_api_key
from swiftmail_core.local.catch_sink import CatchSink
from swiftmail_core.local.supervisor import ProcessSpec, Supervisor


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, **kw) -> int:  # type: ignore[no-untyped-def]
    try:
        with urllib.request.urlopen(url, timeout=2, **kw) as response:  # noqa: S310 - loopback
            return int(response.status)
    except (urllib.error.URLError, OSError):
        return 0


def test_up_sends_a_message_to_the_catch_sink_and_stops_on_sigint(
        test_environ, runtime, make_tenant, tmp_path, run_id) -> None:  # type: ignore[no-untyped-def]
    api_port, submission_port, intake_port = _free_port(), _free_port(), _free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, **test_environ,
           "SWIFTMAIL_DATA_DIR": str(data_dir),
           "SWIFTMAIL_WORKER_TICK_SECONDS": "1",
           "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{submission_port}",
           "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
           "SWIFTMAIL_PLUGIN_RELAY_SCAN_INTERVAL": "0.2",
           "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"swiftmail-test-{run_id}:up",
           # The default network hand-off, to this up's own relay intake.
           "SWIFTMAIL_PLUGIN_RELAY_INTAKE_LISTEN": f"127.0.0.1:{intake_port}",
           "SWIFTMAIL_PLUGIN_TRACKING_STREAM": f"swiftmail-test-{run_id}:up-hits",
           "SWIFTMAIL_WORKER_QUEUE_NAME": f"swiftmail-test-{run_id}-up"}
    process = subprocess.Popen(
        [sys.executable, "-m", "swiftmail_core.cli", "up", "--catch",
         "--bind", f"127.0.0.1:{api_port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while _get(f"http://127.0.0.1:{api_port}/readyz") != 200:
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.3)
        tenant = make_tenant("up")
        key = create_api_key(tenant.id, role="owner", name="up").key
        subject = f"Hello from up {uuid.uuid4().hex[:8]}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/v1/messages", method="POST",
            data=json.dumps({"to": "someone@example.com", "from_email": "app@example.com",
                             "subject": subject, "text": "caught"}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            assert response.status == 202
        caught_dir = data_dir / "caught"
        while not any(subject in p.read_text(errors="replace")
                      for p in caught_dir.glob("*.eml")):
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    text = "".join(output)
    for name in ("api", "worker", "tracking", "relay"):
        assert f"{name} " in text or f"{name}|" in text.replace(" ", "")
    assert "up | stopped" in text


def test_supervisor_stops_everyone_when_one_process_exits() -> None:
    lines: list[str] = []
    supervisor = Supervisor([
        ProcessSpec("short", [sys.executable, "-c", "print('bye'); raise SystemExit(3)"]),
        ProcessSpec("long", [sys.executable, "-c", "import time; print('up', flush=True); "
                                                   "time.sleep(60)"]),
    ], echo=lines.append)
    assert supervisor.run() == 3
    assert all(p.poll() is not None for p in supervisor.processes.values())
    assert supervisor.processes["long"].returncode != 0  # stopped, not run to its end
    assert "short | bye" in lines
    assert any("short exited with code 3" in line for line in lines)


def test_catch_sink_keeps_each_message_with_its_envelope(tmp_path: Path) -> None:
    import smtplib

    sink = CatchSink(tmp_path / "caught").start()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com", "c@example.com"],
                            b"Subject: hi\r\n\r\nbody\r\n")
    finally:
        sink.stop()
    (caught,) = list((tmp_path / "caught").glob("*.eml"))
    text = caught.read_text()
    assert "X-SwiftMail-Caught-For: b@example.com, c@example.com" in text
    assert "Subject: hi" in text and sink.caught == 1


SUPERVISED_CHILD = """
import sys, time
from swiftmail_core.local.supervisor import die_with_supervisor
die_with_supervisor()
print("ready", flush=True)
time.sleep(120)
"""
SUPERVISOR = """
import sys
from swiftmail_core.local.supervisor import ProcessSpec, Supervisor
supervisor = Supervisor([ProcessSpec("child", [sys.executable, "-c", sys.argv[1]])])
sys.exit(supervisor.run())
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_children_do_not_outlive_a_killed_supervisor() -> None:
    # Regression: `swiftmail up` starts its children in their own session; when `up`
    # itself was killed with SIGKILL they kept running (and holding their ports).
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, SUPERVISED_CHILD],
                                  stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        assert supervisor.stdout is not None
        assert "ready" in supervisor.stdout.readline()
        found = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                               text=True, check=True).stdout.split()
        child_pid = int(found[0])
        supervisor.kill()
        supervisor.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _running(child_pid):
            time.sleep(0.1)
        assert not _running(child_pid), "the child outlived its killed supervisor"
    finally:
        supervisor.kill()
        if child_pid is not None:
            try:
                os.kill(child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
