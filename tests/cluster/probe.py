"""A client host of the cluster test: SwiftMail's Redis clients, used without pause.

Usage: python -m tests.cluster.probe SENTINELS SECONDS

Enqueues a huey task and counts with INCR (through ``redis_clients``, as the
worker and the limiters do) in a loop, one JSON line per operation:
``{"t": wall time, "op": name, "ok": bool, "seconds": duration, "error": ...}``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

from swiftmail_core import redis_clients
from swiftmail_core.settings import Settings


def main(sentinels: str, seconds: float) -> None:
    import faulthandler

    # A client stuck in a call shows where, in the log, every 25 s.
    faulthandler.dump_traceback_later(25, repeat=True, file=sys.stderr)
    settings = Settings(data_dir=tempfile.mkdtemp(), redis_sentinels=tuple(sentinels.split(",")),
                        redis_sentinel_service="swiftmail")
    huey = redis_clients.huey(settings, "cluster-probe", results=False)
    task = huey.task(name="noop")(lambda: None)
    counter = redis_clients.client(settings)
    operations = {"huey_enqueue": lambda: huey.enqueue(task.s()),
                  "count": lambda: counter.incr("cluster-probe:count")}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, operation in operations.items():
            started = time.time()
            error = None
            try:
                operation()
            except Exception as ex:  # every failure is a data point
                error = f"{type(ex).__name__}: {ex}"[:200]
            print(json.dumps({"t": started, "op": name, "ok": error is None,
                              "seconds": round(time.time() - started, 3), "error": error}),
                  flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
