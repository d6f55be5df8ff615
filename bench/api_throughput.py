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

``--citus`` serves the same workload a second time from an install on a
Citus coordinator with two workers on this machine (``bench/_citus.py``),
alternating rounds with the single node, and adds ``citus`` (the same
figures) and ``citus_vs_single_<endpoint>_rps`` (median of the per-round
ratios of requests/s, cluster / single node).

    .venv/bin/python bench/api_throughput.py [--seconds 10] [--rounds 3] [--citus]
"""

from __future__ import annotations

import argparse
import contextlib
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

from bench import _citus as citus  # noqa: E402
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


def prepare(env: dict[str, str]) -> str:
    """Create a tenant and an owner key in the install of ``env`` (initialised); return the key."""
    from swiftmail_core.apikeys import create_api_key
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings
    from swiftmail_core.tenants import create_tenant

    runtime = start(load_settings(environ=env), process=ProcessKind.BENCH)
    try:
        tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        return create_api_key(tenant.id, role="owner").key
    finally:
        runtime.close()


def serve(env: dict[str, str], key: str, port: int, args: argparse.Namespace,
          ) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``swiftmail serve`` on ``port`` and make one contact; return (server, base, id)."""
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "swiftmail_core.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--threads", str(args.threads)],
        env={**os.environ, "SWIFTMAIL_CITUS": "", "SWIFTMAIL_CITUS_WORKERS": "", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=2)  # noqa: S310 - loopback
            break
        except OSError:
            if server.poll() is not None:
                raise Unfinished(f"swiftmail serve exited with {server.returncode}") from None
            time.sleep(0.1)
    else:
        stop(server)
        raise Unfinished("swiftmail serve did not become ready in 30 s")
    request = urllib.request.Request(  # noqa: S310 - loopback
        base + "/v1/contacts", data=b'{"email": "target@example.com"}', method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback
        return server, base, json.load(response)["id"]


def one_round(base: str, key: str, contact_id: str, script: Path,
              args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Drive the three endpoints of one server once each; return wrk's figures per endpoint."""
    auth = f"Authorization: Bearer {key}"
    return {
        "healthz": run_wrk(base + "/healthz", args.seconds, args.connections, []),
        "get": run_wrk(f"{base}/v1/contacts/{contact_id}", args.seconds, args.connections,
                       [auth]),
        "post": run_wrk(base, args.seconds, args.connections,
                        [auth, "Content-Type: application/json"], script),
    }


def summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Return the medians of every endpoint's figures and each endpoint's ratio to /healthz."""
    summary: dict[str, Any] = {}
    for name in ("healthz", "get", "post"):
        for metric in ("rps", "p50_ms", "p99_ms", "non_2xx"):
            summary[f"{name}_{metric}"] = median((r[name][metric] for r in runs), 2)
    for name in ("get", "post"):
        summary[f"{name}_vs_healthz"] = ratio(summary[f"{name}_rps"], summary["healthz_rps"])
    return summary


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, serve, measure, clean up; return the figures.

    With ``--citus`` both installs serve at once and the rounds alternate
    between them (single node, then the cluster), so a change of the
    machine's load meets both; each ratio is the median of the rounds'.
    """
    require("wrk")
    args.workers = args.workers or (os.cpu_count() or 1) * 2 + 1
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-api-bench-"))
    database = f"swiftmail_bench_api_{uuid.uuid4().hex[:8]}"
    env = environment(workdir, database)
    os.environ.update(env)
    servers: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        try:
            initialise_scratch()
            targets = {"single": (env, prepare(env))}
            if args.citus:
                cluster = stack.enter_context(citus.local_cluster(args.citus_port))
                citus_env = stack.enter_context(citus.scratch_install(cluster))
                targets["citus"] = (citus_env, prepare(citus_env))
            served = {}
            for offset, (name, (target_env, key)) in enumerate(targets.items()):
                port = args.port + offset if args.port else free_port()
                server, base, contact_id = serve(target_env, key, port, args)
                servers.append(server)
                served[name] = (base, key, contact_id)
            script = workdir / "post.lua"
            results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in served}
            for round_number in range(args.rounds):
                for name, (base, key, contact_id) in served.items():
                    script.write_text(f'run = "{name}-{round_number}"\n' + POST_SCRIPT)
                    results[name].append(one_round(base, key, contact_id, script, args))
            summary: dict[str, Any] = {
                "workers": args.workers, "threads": args.threads,
                "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
                **summarise(results["single"]),
            }
            if "citus" in results:
                summary["citus"] = summarise(results["citus"])
                for name in ("healthz", "get", "post"):
                    summary[f"citus_vs_single_{name}_rps"] = median(
                        (ratio(cluster_run[name]["rps"], single_run[name]["rps"]) or 0.0
                         for single_run, cluster_run in zip(results["single"], results["citus"],
                                                            strict=True)), 3)
            return summary
        finally:
            for server in servers:
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
    options.add_argument("--port", type=int, default=None,
                         help="the server's port (the cluster's server the next one; "
                              "default: free ports)")
    citus.add_arguments(options)
    return options


if __name__ == "__main__":
    run("api_throughput", measure, parser())
