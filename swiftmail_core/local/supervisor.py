"""Run several SwiftMail processes in the foreground, like ``docker compose up``.

Each child's output is prefixed with its name. SIGINT or SIGTERM stops every
child gracefully (SIGINT first: the worker finishes running batches, the
relay finishes its deliveries), then kills what is left after a grace period.
When one child exits on its own, the others are stopped and ``run`` returns
that child's exit code, so a broken setting is one visible failure, not a
half-running install.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

STOP_GRACE_SECONDS = 25.0
#: Set in each child's environment: the pid of the supervisor it must not outlive.
SUPERVISOR_PID_ENV = "SWIFTMAIL_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """In a child of ``swiftmail up``: be sent SIGTERM when the supervisor dies.

    The children run in their own session (so Ctrl-C reaches only the
    supervisor, which stops them in order); without this, a supervisor killed
    with SIGKILL left them running. Linux only (``prctl``); elsewhere a no-op.
    The variable is removed so that grandchildren do not check it.
    """
    expected = os.environ.pop(SUPERVISOR_PID_ENV, None)
    if not expected or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(expected):  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process to run: a name for its log prefix and its command line."""

    name: str
    argv: Sequence[str]
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Supervisor:
    """Start processes, relay their output, stop them all together."""

    def __init__(self, specs: Sequence[ProcessSpec], *,
                 echo: Callable[[str], None] | None = None) -> None:
        self.specs = list(specs)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.width = max((len(spec.name) for spec in self.specs), default=0)
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self._stop = threading.Event()
        self._echo_lock = threading.Lock()

    def request_stop(self, *_: object) -> None:
        """Ask every process to stop (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start every process, wait until one exits or a stop is asked; return an exit code."""
        readers = []
        for spec in self.specs:
            process = subprocess.Popen(
                list(spec.argv), text=True, bufsize=1,
                env={**os.environ, **spec.environ, SUPERVISOR_PID_ENV: str(os.getpid())},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # Ctrl-C reaches only us; we stop the children in order
            self.processes[spec.name] = process
            reader = threading.Thread(target=self._relay_output, args=(spec.name, process),
                                      daemon=True, name=f"output-{spec.name}")
            reader.start()
            readers.append(reader)
        exit_code = 0
        while not self._stop.wait(0.2):
            ended = [(name, p.returncode) for name, p in self.processes.items()
                     if p.poll() is not None]
            if ended:
                name, code = ended[0]
                self._say("up", f"{name} exited with code {code}; stopping the others")
                exit_code = code or 1
                break
        self.stop_all()
        for reader in readers:
            reader.join(timeout=2)
        return exit_code

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Send SIGINT to every live process, then SIGKILL what outlives ``grace``."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say("up", f"{name} did not stop within {grace:.0f}s; killing it")
                process.kill()
                process.wait()

    def _relay_output(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._say(name, line.rstrip("\n"))

    def _say(self, name: str, line: str) -> None:
        with self._echo_lock:
            self.echo(f"{name.ljust(self.width)} | {line}")


def swiftmail_argv(*arguments: str) -> list[str]:
    """Return the command line that runs ``swiftmail ARGUMENTS`` with this interpreter."""
    return [sys.executable, "-m", "swiftmail_core.cli", *arguments]
