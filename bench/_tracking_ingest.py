"""Tracking ingest at a fixed rate, as a background load for another benchmark.

Starts the shipped hot path (``swiftmail tracking serve``), the drainer as
shipped (``nice -n 10 swiftmail tracking drain``) and ``bench/_open_loop.py``
offering ``rate`` hits/s of opens and clicks (alternating) on the ledger
rows given, for ``seconds``. ``finish()`` waits for the generator, lets the
drainer empty the stream and returns the generator's figures with the hits
Redis acknowledged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench._common import Unfinished, free_port, stop

ROOT = Path(__file__).resolve().parents[1]
OPEN_LOOP = ROOT / "bench" / "_open_loop.py"
DRAIN_NICE = 10


class Ingest:
    """Background tracking load: server, drainer and open-loop generator."""

    def __init__(self, env: dict[str, str], workdir: Path, rate: float, seconds: float,
                 workers: int = 2) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT),
                    "SWIFTMAIL_PLUGIN_TRACKING_STREAM": f"bench-{uuid.uuid4().hex[:8]}:hits"}
        self.stream = self.env["SWIFTMAIL_PLUGIN_TRACKING_STREAM"]
        self.workdir = workdir
        self.rate = rate
        self.seconds = seconds
        self.workers = workers
        self.processes: list[subprocess.Popen] = []
        self.generator: subprocess.Popen | None = None

    def start(self, paths: list[str]) -> None:
        """Start server, drainer and generator over ``paths`` (request paths)."""
        swiftmail = str(Path(sys.executable).with_name("swiftmail"))
        port = free_port()
        (self.workdir / "ingest-paths.txt").write_text("\n".join(paths) + "\n")
        self.processes.append(subprocess.Popen(
            [swiftmail, "tracking", "serve", "--bind", f"127.0.0.1:{port}",
             "--workers", str(self.workers)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.processes.append(subprocess.Popen(
            ["nice", "-n", str(DRAIN_NICE), swiftmail, "tracking", "drain",
             "--consumer", "bench-drainer"], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{paths[0]}", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise Unfinished("swiftmail tracking serve never answered")
        self.generator = subprocess.Popen(
            [sys.executable, str(OPEN_LOOP), "--port", str(port), "--paths",
             str(self.workdir / "ingest-paths.txt"), "--rate", str(self.rate),
             "--seconds", str(self.seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running(self) -> bool:
        """Return whether the generator is still offering load."""
        return self.generator is not None and self.generator.poll() is None

    def finish(self) -> dict[str, Any]:
        """Wait for the generator and the drainer's tail; return the ingest figures."""
        import redis

        assert self.generator is not None
        try:
            out, err = self.generator.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            # NOTE: on a machine too busy to offer the rate the generator falls behind;
            # its figures are lost, the events = hits check below still holds.
            stop(self.generator)
            out, err = "", ""
            figures: dict[str, Any] = {"overran": True}
        else:
            if self.generator.returncode != 0:
                raise Unfinished(f"the open-loop generator failed: {err[-2000:]}")
            figures = json.loads(out.strip().splitlines()[-1])
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        time.sleep(2)
        started = time.monotonic()
        while client.xlen(self.stream) > 0 and time.monotonic() - started < 600:
            time.sleep(0.5)
        time.sleep(1)
        figures["hits_acknowledged"] = int(client.xinfo_stream(self.stream)["entries-added"])
        figures["drain_tail_seconds"] = round(time.monotonic() - started, 1)
        return figures

    def close(self) -> None:
        """Stop everything this load started and delete its stream."""
        if self.generator is not None:
            stop(self.generator)
        for process in self.processes:
            stop(process, timeout=30)
        try:
            import redis

            redis.Redis.from_url(self.env["REDIS_URL"]).delete(self.stream)
        except Exception as ex:  # cleanup only
            print(f"cleanup: {ex}", file=sys.stderr)
