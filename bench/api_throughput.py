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
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from scratch import drop_database, environment

ROOT = Path(__file__).resolve().parents[1]

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _seconds(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m|h)$", value)
    if match is None:
        raise ValueError(f"cannot read wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def run_wrk(url: str, seconds: int, connections: int, headers: list[str],
            script: Path | None = None) -> dict[str, float]:
    """Run wrk once; return requests/s, p50/p99 in ms, and non-2xx responses."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True,
                            check=True).stdout
    if "50%" not in output:
        raise RuntimeError(f"wrk printed no latency distribution:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s*50%\s+(\S+)\s*$", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s*99%\s+(\S+)\s*$", output, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rps, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000,
            "non_2xx": float(errors.group(1)) if errors else 0.0}


def main() -> None:
    """Set up, serve, measure, print one JSON line, clean up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-api-bench-"))
    database = f"swiftmail_bench_api_{uuid.uuid4().hex[:8]}"
    env = environment(workdir, database)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    server = None
    try:
        from swiftmail_core.apikeys import create_api_key
        from swiftmail_core.install import initialise
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.settings import load_settings
        from swiftmail_core.tenants import create_tenant

        initialise(None, {})
        runtime = start(load_settings(), process=ProcessKind.BENCH)
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        key = create_api_key(tenant.id, role="owner").key
        runtime.close()
        workers = args.workers or (os.cpu_count() or 1) * 2 + 1
        port = _free_port()
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
                time.sleep(0.1)
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
        summary: dict[str, object] = {
            "benchmark": "api_throughput", "workers": workers, "threads": args.threads,
            "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
            "cores": os.cpu_count(),
            # Other processes on the machine skew every number: record how busy it was.
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        }
        for name, runs in results.items():
            for metric in ("rps", "p50_ms", "p99_ms", "non_2xx"):
                summary[f"{name}_{metric}"] = round(statistics.median(r[metric] for r in runs), 2)
        for name in ("get", "post"):
            summary[f"{name}_vs_healthz"] = round(
                float(summary[f"{name}_rps"]) / float(summary["healthz_rps"]), 3)  # type: ignore[arg-type]
        print(json.dumps(summary))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        from swiftmail_core import db

        db.disconnect()
        drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
