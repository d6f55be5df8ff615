"""Real processes for the load-balancer tests: `swiftmail serve` and HAProxy."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "contrib" / "haproxy" / "haproxy.cfg"


def rolling_restart_module() -> ModuleType:
    """Import contrib/haproxy/rolling_restart.py (a script, not a package)."""
    path = REPO / "contrib" / "haproxy" / "rolling_restart.py"
    spec = importlib.util.spec_from_file_location("swiftmail_haproxy_rolling_restart", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def haproxy_binary() -> str | None:
    """Return the path of the haproxy binary, or None when it is not installed."""
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None


def free_port(host: str) -> int:
    """Return a port nothing listens on at ``host`` just now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Return the status of GET ``url``, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as ex:
        return ex.code
    except OSError:
        return None


def wait_for(what: str, condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class ApiProcess:
    """One `swiftmail serve` on ``address`` (host:port), restartable."""

    def __init__(self, address: str, environ: dict[str, str], log_path: Path,
                 drain_seconds: float = 0) -> None:
        self.address = address
        self.environ = environ
        self.log_path = log_path
        self.drain_seconds = drain_seconds
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the base URL of this process."""
        return f"http://{self.address}"

    def start(self) -> ApiProcess:
        """Start the process (returns at once; see ``wait_ready``)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "swiftmail_core.cli", "serve", "--bind", self.address,
                 "--workers", "2", "--threads", "2", "--graceful-timeout", "20",
                 "--drain-seconds", str(self.drain_seconds)],
                env=self.environ, stdout=log, stderr=log)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until ``/readyz`` answers 200; fail with the log if the process died."""
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"serve on {self.address} exited: {self.log_tail()}")
            return http_status(self.url + "/readyz") == 200

        wait_for(f"serve on {self.address} to be ready", ready, timeout)

    def terminate(self, timeout: float = 60) -> int:
        """Send SIGTERM and wait for the process to exit; return its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Stop the process and its workers if it still runs (cleanup after a failure)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # gunicorn: stop workers at once
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self) -> str:
        """Return the end of this process's output."""
        return self.log_path.read_text(errors="replace")[-3000:]


class HaproxyProcess:
    """HAProxy running contrib/haproxy/haproxy.cfg in the foreground."""

    def __init__(self, binary: str, directory: Path, bind: str, servers: list[str]) -> None:
        self.binary = binary
        self.bind = bind
        self.socket_path = str(directory / "haproxy.sock")
        self.log_path = directory / "haproxy.log"
        self.environ = {**os.environ, "SWIFTMAIL_LB_BIND": bind,
                        "SWIFTMAIL_LB_SOCKET": self.socket_path}
        for number, address in enumerate(servers, start=1):
            self.environ[f"SWIFTMAIL_API{number}"] = address
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the URL clients use."""
        return f"http://{self.bind}"

    def start(self) -> HaproxyProcess:
        """Check the configuration, then start HAProxy in the foreground (-db)."""
        subprocess.run([self.binary, "-c", "-q", "-f", str(HAPROXY_CFG)], env=self.environ,
                       check=True, timeout=30)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-db", "-f", str(HAPROXY_CFG)],
                                            env=self.environ, stdout=log, stderr=log)
        wait_for("HAProxy's runtime socket", lambda: os.path.exists(self.socket_path), 30)
        return self

    def stop(self) -> None:
        """Stop HAProxy if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
