"""Benchmark: the REST API under gunicorn, driven by wrk in another process.

Creates a scratch SwiftMail database on the local PostgreSQL (the same
``init`` path as production; dropped at the end), a tenant, an owner key
and one contact, then starts ``swiftmail serve`` (gthread workers) on
loopback and drives it with ``wrk`` (``--latency``) for each endpoint:

* ``GET /healthz``: the baseline, measured in the same run through the same
  gunicorn: Falcon and gunicorn with no authentication and no database;
* ``GET /v1/contacts/{id}``: key authentication (a system-role lookup),
  rate-limit counters in Redis, ``tenant_tx``, one row read, JSON;
* ``POST /v1/contacts``: the same plus body validation and an insert
  (each request a new email, from a wrk Lua script).

Medians over ``--rounds`` runs of requests/s and p50/p99 latency; the ratio
of each endpoint's requests/s to the baseline's. wrk shares the machine's
two cores with the server, as a load generator on the same host does.

    .venv/bin/python bench/api_throughput.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    Unfinished,
    arguments,
    drop_database,
    environment,
    free_port,
    initialise_scratch,
    median,
    ratio,
    require,
    run,
    run_wrk,
    stop,
)

POST_SCRIPT = """
counter = 0
thread_id = 0
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
function request()
  counter = counter + 1
  local body = string.format('{"email": "bench-%s-%d-%d@example.com", "name": "Bench"}',
                             run, thread_id, counter)
  return wrk.format("POST", "/v1/contacts", nil, body)
end
"""


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, serve, measure, clean up; return the figures."""
    require("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-api-bench-"))
    database = f"swiftmail_bench_api_{uuid.uuid4().hex[:8]}"
    env = environment(workdir, database)
    os.environ.update(env)
    server = None
    try:
        from swiftmail_core.apikeys import create_api_key
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        initialise_scratch()
        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        key = create_api_key(tenant.id, role="owner").key
        runtime.close()
        workers = args.workers or (os.cpu_count() or 1) * 2 + 1
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "swiftmail_core.cli", "serve", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(args.threads)],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=2)  # noqa: S310 - loopback
                break
            except OSError:
                if server.poll() is not None:
                    raise Unfinished(f"swiftmail serve exited with {server.returncode}") from None
                time.sleep(0.1)
        else:
            raise Unfinished("swiftmail serve did not become ready in 30 s")
        auth = f"Authorization: Bearer {key}"
        request = urllib.request.Request(  # noqa: S310 - loopback
            base + "/v1/contacts", data=b'{"email": "target@example.com"}', method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback
            contact_id = json.load(response)["id"]
        script = workdir / "post.lua"
        results: dict[str, list[dict[str, float]]] = {"healthz": [], "get": [], "post": []}
        for round_number in range(args.rounds):
            script.write_text(f'run = "{round_number}"\n' + POST_SCRIPT)
            results["healthz"].append(run_wrk(base + "/healthz", args.seconds,
                                              args.connections, []))
            results["get"].append(run_wrk(f"{base}/v1/contacts/{contact_id}", args.seconds,
                                          args.connections, [auth]))
            results["post"].append(run_wrk(base, args.seconds, args.connections,
                                           [auth, "Content-Type: application/json"], script))
        summary: dict[str, Any] = {
            "workers": workers, "threads": args.threads,
            "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
        }
        for name, runs in results.items():
            for metric in ("rps", "p50_ms", "p99_ms", "non_2xx"):
                summary[f"{name}_{metric}"] = median((r[metric] for r in runs), 2)
        for name in ("get", "post"):
            summary[f"{name}_vs_healthz"] = ratio(summary[f"{name}_rps"], summary["healthz_rps"])
        return summary
    finally:
        stop(server, timeout=30)
        from swiftmail_core import db

        db.disconnect()
        drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"seconds": 1, "rounds": 1, "connections": 4,
                                        "workers": 1, "threads": 2})
    options.add_argument("--seconds", type=int, default=10)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--connections", type=int, default=32)
    options.add_argument("--workers", type=int, default=None)
    options.add_argument("--threads", type=int, default=4)
    return options


if __name__ == "__main__":
    run("api_throughput", measure, parser())
