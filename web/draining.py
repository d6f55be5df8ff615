"""Draining: after SIGTERM, ``/readyz`` answers 503 for a while, then the API stops.

A load balancer checking ``/readyz`` needs a few seconds to notice that a
host is going away. ``swiftmail serve --drain-seconds N`` keeps serving for N
seconds after SIGTERM while ``/readyz`` answers 503 (``"draining"``), so the
balancer takes the host out before its listener closes; then gunicorn stops
gracefully (requests in flight finish within the graceful timeout).

The flag lives in one byte of anonymous shared memory that the gunicorn
master creates before it forks its workers: the master sets it, every worker
(including one started during the drain) reads it.
"""

from __future__ import annotations

import mmap
import time
from typing import Any

from gunicorn.arbiter import Arbiter


class DrainFlag:
    """One byte shared between a gunicorn master and its forked workers."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 1)

    def set(self) -> None:
        """Mark this server as draining."""
        self._memory[0] = 1

    def is_set(self) -> bool:
        """Return whether this server is draining."""
        return self._memory[0] == 1


_flag: DrainFlag | None = None


def install() -> DrainFlag:
    """Create this process's flag; call in the master before workers fork."""
    global _flag
    _flag = DrainFlag()
    return _flag


def is_draining() -> bool:
    """Return whether the server this process belongs to is draining."""
    return _flag is not None and _flag.is_set()


class DrainingArbiter(Arbiter):
    """A gunicorn master whose first SIGTERM drains before the graceful stop.

    A second SIGTERM, or SIGINT/SIGQUIT, stops at once as gunicorn always does.
    """

    def __init__(self, app: Any, flag: DrainFlag, drain_seconds: float) -> None:
        super().__init__(app)
        self.flag = flag
        self.drain_seconds = drain_seconds
        self.drain_deadline: float | None = None

    def handle_term(self) -> None:
        """Start draining, or stop when already draining (or not asked to drain)."""
        if self.drain_deadline is not None or self.drain_seconds <= 0:
            raise StopIteration
        self.flag.set()
        self.drain_deadline = time.monotonic() + self.drain_seconds
        self.log.info("draining: /readyz answers 503 for %s s, then a graceful stop",
                      self.drain_seconds)

    def murder_workers(self) -> None:
        """Also end the drain when its time is up (the master loop calls this each second)."""
        super().murder_workers()
        if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            raise StopIteration
