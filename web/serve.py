"""Run the API under gunicorn (gthread workers) with multiprocess metrics."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from swiftmail_web import draining


def default_workers() -> int:
    """Return the worker count for this machine: 2 per core plus one."""
    return (os.cpu_count() or 1) * 2 + 1


def prepare_metrics_dir(data_dir: Path) -> Path:
    """Empty and export ``PROMETHEUS_MULTIPROC_DIR`` before workers start."""
    directory = Path(data_dir) / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class ApiServer(BaseApplication):
    """A gunicorn application serving ``swiftmail_web.app:get_app()``."""

    def __init__(self, options: dict[str, Any], drain_seconds: float = 0) -> None:
        self.options = options
        self.drain_seconds = drain_seconds
        super().__init__()

    def load_config(self) -> None:
        """Apply our options to gunicorn's config."""
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("child_exit", _child_exit)

    def load(self) -> Any:
        """Build the app in each worker (after fork: own DB pool)."""
        from swiftmail_web.app import get_app

        return get_app()

    def run(self) -> None:
        """Run gunicorn's master, draining on the first SIGTERM (``web.draining``)."""
        flag = draining.install()
        try:
            draining.DrainingArbiter(self, flag, self.drain_seconds).run()
        except RuntimeError as ex:  # as gunicorn's own run() reports a failed start
            print(f"\nError: {ex}\n", file=sys.stderr)
            sys.exit(1)


def serve(bind: str, workers: int, threads: int, data_dir: Path, timeout: int = 30,
          drain_seconds: float = 0, graceful_timeout: int = 20) -> None:
    """Start gunicorn and block until it stops."""
    prepare_metrics_dir(data_dir)
    ApiServer({
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": timeout,
        "graceful_timeout": graceful_timeout,
        "keepalive": 5,
        "accesslog": None,
        "max_requests": 0,
    }, drain_seconds=drain_seconds).run()
