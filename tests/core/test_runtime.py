"""``runtime.start`` runs ``swiftmail_startup`` in every kind of SwiftMail process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.runtime import ProcessKind
from swiftmail_core.settings import load_settings
from tests.plugins.installed import install_plugin

RECORDER = """
    import os
    from swiftmail_core.hookspecs import hookimpl

    @hookimpl
    def swiftmail_startup(process):
        with open(os.environ["STARTUP_LOG"], "a") as log:
            log.write(f"{process} {os.getpid()}\\n")
"""
LEGACY = """
    import os
    from swiftmail_core.hookspecs import hookimpl

    @hookimpl
    def swiftmail_startup(settings):
        with open(os.environ["STARTUP_LOG"], "a") as log:
            log.write(f"legacy {os.getpid()}\\n")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_startup_hears_the_process_kind_and_old_implementations_still_run() -> None:
    heard = []

    class Current:
        @hookimpl
        def swiftmail_startup(self, process, settings):  # type: ignore[no-untyped-def]
            heard.append(("current", process, settings.log_level))

    class Legacy:  # written before the hook had `process`
        @hookimpl
        def swiftmail_startup(self, settings):  # type: ignore[no-untyped-def]
            heard.append(("legacy", settings.log_level))

    settings = load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none",
                                      "SWIFTMAIL_LOG_LEVEL": "warning"})
    PluginManager.load(settings, extra=[Legacy(), Current()]).startup(ProcessKind.RELAY)
    assert heard == [("current", "relay", "warning"), ("legacy", "warning")]


class Startups:
    """The processes started in one test and the startups their plugins recorded."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.processes: list[subprocess.Popen[str]] = []

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        """Start ``argv`` with the recording plugins installed."""
        process = subprocess.Popen(list(argv), env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def swiftmail(self, *args: str) -> subprocess.Popen[str]:
        """Start ``swiftmail ARGS``."""
        return self.spawn(sys.executable, "-m", "swiftmail_core.cli", *args)

    def records(self) -> list[tuple[str, int]]:
        """Return (kind, pid) for every startup so far."""
        if not self.log.exists():
            return []
        return [(kind, int(pid)) for kind, pid in
                (line.split() for line in self.log.read_text().splitlines() if line)]

    def wait_for(self, done: Callable[[list[tuple[str, int]]], bool],
                 timeout: float = 90) -> list[tuple[str, int]]:
        """Wait until ``done(records)``; fail with the processes' stderr if they die first."""
        deadline = time.monotonic() + timeout
        while not done(records := self.records()):
            for process in self.processes:
                if process.poll() is not None and process.returncode != 0:
                    raise AssertionError(f"{process.args} exited: {process.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"startups so far: {records}"
            time.sleep(0.2)
        return records

    def stop(self) -> None:
        """Interrupt every process still running and wait for it."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def startups(test_environ, targets, tmp_path, run_id) -> Iterator[Startups]:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_plugin(site, "recorder", RECORDER)
    env = install_plugin(site, "legacy", LEGACY)
    environ = {**os.environ, **test_environ, **env,
               "STARTUP_LOG": str(tmp_path / "startups.log"),
               "SWIFTMAIL_DATA_DIR": str(tmp_path / "data"),
               "SWIFTMAIL_LOG_LEVEL": "warning",
               "SWIFTMAIL_WORKER_QUEUE_NAME": f"swiftmail-test-{run_id}-startup",
               "SWIFTMAIL_PLUGIN_TRACKING_STREAM": f"swiftmail-test-{run_id}:startup-hits",
               "SWIFTMAIL_PLUGIN_WEB_REDIS_PREFIX": f"swiftmail-test-{run_id}-startup:",
               "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"swiftmail-test-{run_id}:startup",
               "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
               "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{_free_port()}",
               "SWIFTMAIL_PLUGIN_RELAY_INTAKE_LISTEN": f"127.0.0.1:{_free_port()}"}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    running = Startups(environ, tmp_path / "startups.log")
    yield running
    running.stop()


def _kinds(records: list[tuple[str, int]]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for kind, pid in records:
        found.setdefault(kind, set()).add(pid)
    return found


def _every_process_also_ran_the_legacy_hook(records: list[tuple[str, int]]) -> None:
    found = _kinds(records)
    started = set().union(*(pids for kind, pids in found.items() if kind != "legacy"))
    assert found.get("legacy", set()) == started


def test_up_and_each_of_its_children_start_their_plugins(startups: Startups) -> None:
    # Regression: only `serve` and `worker` called swiftmail_startup; the relay, the
    # drainer, the webhook deliverer and the public apps never did.
    startups.swiftmail("up", "--catch", "--bind", f"127.0.0.1:{_free_port()}")
    children = {"up", "api", "worker", "tracking-drainer", "relay"}
    records = startups.wait_for(lambda records: children <= set(_kinds(records)))
    startups.stop()
    found = _kinds(startups.records())
    assert all(len(found[kind]) == 1 for kind in children), records
    assert len(set().union(*(found[kind] for kind in children))) == len(children)  # 5 processes
    _every_process_also_ran_the_legacy_hook(startups.records())


def test_each_server_worker_starts_its_plugins(startups: Startups) -> None:
    startups.swiftmail("serve", "--bind", f"127.0.0.1:{_free_port()}", "--workers", "2",
                       "--threads", "2")
    startups.spawn(sys.executable, "-m", "gunicorn", "--workers", "2", "--bind",
                   f"127.0.0.1:{_free_port()}", "swiftmail_web.public.wsgi:app")
    startups.swiftmail("tracking", "serve", "--bind", f"127.0.0.1:{_free_port()}",
                       "--workers", "2")
    startups.wait_for(lambda records: all(
        len(_kinds(records).get(kind, ())) == 2 for kind in ("api", "public", "public-asgi")))
    startups.stop()
    _every_process_also_ran_the_legacy_hook(startups.records())


def test_each_command_starts_its_plugins_as_its_kind(startups: Startups) -> None:
    for args, kind in ((("tracking", "drain", "--once"), "tracking-drainer"),
                       (("webhooks", "deliver", "--once"), "webhook-deliverer"),
                       (("tenant", "list"), "cli")):
        process = startups.swiftmail(*args)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        assert _kinds(startups.records()).get(kind), (kind, startups.records())
    startups.swiftmail("worker")
    startups.swiftmail("relay", "run")
    startups.wait_for(lambda records: {"worker", "relay"} <= set(_kinds(records)))
    startups.stop()
    _every_process_also_ran_the_legacy_hook(startups.records())
