"""One delivering relay per spool: an exclusive lock file in the spool directory.

``swiftmail relay run`` takes ``SPOOL/deliver.lock`` with ``flock`` before it
delivers; a second deliverer on the same spool stops at once with a clear
message (two would deliver the same messages twice). ``--no-deliver`` intake
processes take no lock. The kernel drops the lock when the process dies, even
by ``kill -9``, so a crash never leaves the spool locked. ``deliverer_running``
lets the worker and ``doctor`` see whether a relay delivers from a spool.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from swiftmail_core.errors import ConfigurationError

LOCK_NAME = "deliver.lock"


class SpoolLock:
    """The exclusive delivery lock of one spool directory."""

    def __init__(self, spool_dir: Path | str) -> None:
        self.path = Path(spool_dir) / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> SpoolLock:
        """Take the lock or raise ConfigurationError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigurationError(
                f"another relay (pid {holder}) already delivers from the spool {self.path.parent}: "
                "one deliverer per spool; run extra listeners with `swiftmail relay run "
                "--no-deliver`") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Give the lock back."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def deliverer_running(spool_dir: Path | str) -> bool:
    """Return True when some process holds the spool's delivery lock."""
    path = Path(spool_dir) / LOCK_NAME
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
