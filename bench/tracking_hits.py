"""Benchmark: tracking hits (open pixel, click redirect) at saturation and at a fixed rate.

Creates a scratch SwiftMail database on the local PostgreSQL (the ``init``
path; dropped at the end), a tenant, a campaign with 1,000 ledger rows and a
link, and signed open and click tokens for them. Then, on loopback:

* ``nginx``: a static 1x1 GIF, the ceiling (its own process, 2 workers);
* ``bare``: a Falcon handler returning the GIF under the same gunicorn
  settings (no token check, no Redis): what the framework itself costs;
* ``pixel`` and ``click``: ``swiftmail tracking serve`` (uvicorn, the ASGI hot
  path as shipped: token HMAC check, batched ``XADD``s, link lookup cached per
  process for clicks; ``--server gunicorn``: the WSGI app
  ``swiftmail_web.public.wsgi:app``), while ``swiftmail tracking drain``
  (``nice -n 10`` as shipped, ``--drain-nice``) stores the hits as events.

wrk (``--latency``, 50 connections, 2 threads) runs in another process on the
same two cores: saturation figures. Then, at a FIXED offered rate (``--rate``
hits/s for ``--rate-seconds``), ``bench/_open_loop.py`` (an open-loop
generator that counts latency from each request's due time, so a slow server
cannot hide the requests it delayed: no coordinated omission) measures the
latency quantiles of nginx (the floor of the generator and the machine at that
rate, in the same run), the pixel and the click, with the drainer running. Afterwards the drainer empties the stream and the benchmark
compares the events stored with the hits Redis acknowledged (``XADD``s, from
``XINFO STREAM``'s entries-added). Medians over ``--rounds``.

    .venv/bin/python bench/tracking_hits.py [--seconds 10] [--rounds 3]
        [--server uvicorn] [--workers 2] [--rate 2000] [--drain-nice 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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
from swiftmail_core.tracking_ingest.drainer import DEFAULT_BATCH_SIZE  # noqa: E402

MESSAGES = 1000
OPEN_LOOP = ROOT / "bench" / "_open_loop.py"
BAR_P99_MS = 50
ROTATE_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1], {["User-Agent"] = "Mozilla/5.0 (X11) Firefox/120"})
end
"""
BARE_APP = '''
import base64
import falcon
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
class Pixel:
    def on_get(self, req, resp, token):
        resp.content_type = "image/gif"
        resp.data = GIF
app = falcon.App()
app.add_route("/t/o/{token}.gif", Pixel())
'''
NGINX_CONF = """
worker_processes 2;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(dir)s; proxy_temp_path %(dir)s; fastcgi_temp_path %(dir)s;
  uwsgi_temp_path %(dir)s; scgi_temp_path %(dir)s;
  server {
    listen 127.0.0.1:%(port)d;
    location / { root %(dir)s/static; default_type image/gif; try_files /pixel.gif =404; }
  }
}
"""


def _wait_http(url: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.1)
    raise Unfinished(f"{url} never answered")


def _seed(env: dict[str, str], workdir: Path) -> tuple[Path, Path, uuid.UUID]:
    """Create tenant, campaign, ledger rows and link; write the token path files."""
    from swiftmail_core import tokens
    from swiftmail_core.db import app_db, tenant_tx
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings
    from swiftmail_core.tenants import create_tenant

    initialise_scratch()
    settings = load_settings()
    runtime = start(settings, process=ProcessKind.BENCH)
    tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
    campaign = uuid.uuid4()
    with tenant_tx(tenant.id):
        app_db.execute_sql("INSERT INTO campaigns (tenant_id, id, name, status) "
                           "VALUES (%s, %s, 'bench', 'sent')", (str(tenant.id), str(campaign)))
        ids = [row[0] for row in app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, email, status, sent_at) "
            "SELECT %s, %s, 'r' || n || '@example.com', 'delivered', now() - interval '1 hour' "
            "FROM generate_series(1, %s) n RETURNING id",
            (str(tenant.id), str(campaign), MESSAGES)).fetchall()]
        link = app_db.execute_sql(
            "INSERT INTO links (tenant_id, campaign_id, url) VALUES (%s, %s, "
            "'https://example.com/landing') RETURNING id", (str(tenant.id), str(campaign)),
        ).fetchone()[0]
    key = settings.secret_key
    pixel = workdir / "pixel.txt"
    click = workdir / "click.txt"
    pixel.write_text("".join(
        f"/t/o/{tokens.make_open_token(key, tenant.id, i)}.gif\n" for i in ids))
    click.write_text("".join(
        f"/t/c/{tokens.make_click_token(key, tenant.id, link, i)}\n" for i in ids))
    runtime.close()
    return pixel, click, tenant.id


def _script(workdir: Path, paths: Path) -> Path:
    script = workdir / f"{paths.stem}.lua"
    script.write_text(ROTATE_SCRIPT % paths)
    return script


def _gunicorn(app: str, port: int, env: dict[str, str], args: argparse.Namespace,
              extra_path: str = "") -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
               "--workers", str(args.workers), "--worker-class", args.worker_class,
               "--threads", str(args.threads), "--log-level", "warning",
               "--backlog", "2048"]
    path = os.pathsep.join(p for p in (extra_path, str(ROOT)) if p)
    return subprocess.Popen(command, env={**os.environ, **env, "PYTHONPATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tree_cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user + system) of a process and its live descendants."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total


def _drainer_cpu_seconds(drainer: subprocess.Popen, database: str) -> tuple[float, float]:
    """Return the CPU seconds of the drainer's process tree and of the database's backends.

    In burst mode (``--drain after``) the drainer is the only writer of the scratch
    database, so its backends' CPU is the PostgreSQL side of storing the hits.
    """
    import psycopg2

    from bench._common import ADMIN_URL

    connection = psycopg2.connect(ADMIN_URL)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid()", (database,))
            backends = [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()
    return _tree_cpu_seconds(drainer.pid), sum(_tree_cpu_seconds(pid) for pid in backends)


def _fixed_rate(port: int, paths: Path, args: argparse.Namespace,
                server: subprocess.Popen | None = None) -> dict[str, Any]:
    """Offer ``args.rate`` requests/s (open loop) to 127.0.0.1:port; return its figures.

    With ``server``, also the CPU its process tree spent per answered request,
    in microseconds: unlike latency, barely moved by the other work on the machine.
    """
    cpu = _tree_cpu_seconds(server.pid) if server is not None else 0.0
    completed = subprocess.run(
        [sys.executable, str(OPEN_LOOP), "--port", str(port), "--paths", str(paths),
         "--rate", str(args.rate), "--seconds", str(args.rate_seconds),
         "--connections", str(args.rate_connections)],
        capture_output=True, text=True, check=False, timeout=args.rate_seconds + 120)
    if completed.returncode != 0:
        raise Unfinished(f"the open-loop generator failed: {completed.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    if server is not None and figures["completed"]:
        cpu = _tree_cpu_seconds(server.pid) - cpu
        figures["server_cpu_us_per_request"] = round(cpu / figures["completed"] * 1e6, 1)
    return figures


def _fixed_rate_summary(runs: dict[str, list[dict[str, Any]]], rate: float) -> dict[str, Any]:
    """Return medians per target of the fixed-rate runs, and whether the pixel meets the bar."""
    summary: dict[str, Any] = {"offered_rate": rate}
    for name, results in runs.items():
        summary[name] = {metric: median((r[metric] for r in results), 2)
                         for metric in ("achieved_rate", "p50_ms", "p90_ms", "p99_ms",
                                        "p999_ms", "max_ms")}
        summary[name]["failed"] = sum(r["requests"] - r["ok"] for r in results)
        if "server_cpu_us_per_request" in results[0]:
            summary[name]["server_cpu_us_per_request"] = median(
                (r["server_cpu_us_per_request"] for r in results), 1)
        summary[name]["p99_runs_ms"] = [r["p99_ms"] for r in results]
    pixel = summary["pixel"]
    summary["bar_p99_ms"] = BAR_P99_MS
    summary["pixel_meets_bar"] = (pixel["p99_ms"] < BAR_P99_MS and pixel["failed"] == 0
                                  and pixel["achieved_rate"] >= 0.99 * rate)
    return summary


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Set up, measure, clean up; return the figures."""
    require("wrk")
    nginx = require("nginx")
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-tracking-bench-"))
    workdir.chmod(0o755)  # nginx workers (user nobody) read the static GIF here
    database = f"swiftmail_bench_tracking_{uuid.uuid4().hex[:8]}"
    stream = f"swiftmail-bench-{uuid.uuid4().hex[:8]}:hits"
    env = {**environment(workdir, database), "SWIFTMAIL_PLUGIN_TRACKING_STREAM": stream,
           "SWIFTMAIL_LOG_LEVEL": "warning"}
    os.environ.update(env)
    processes: list[subprocess.Popen] = []
    nginx_dir = workdir / "nginx"
    try:
        import redis

        pixel_paths, click_paths, tenant_id = _seed(env, workdir)
        client = redis.Redis.from_url(env["REDIS_URL"])
        # nginx: the ceiling.
        (nginx_dir / "static").mkdir(parents=True)
        from swiftmail_web.public.tracking import PIXEL

        (nginx_dir / "static" / "pixel.gif").write_bytes(PIXEL)
        nginx_port = free_port()
        (nginx_dir / "nginx.conf").write_text(NGINX_CONF % {"dir": nginx_dir, "port": nginx_port})
        subprocess.run([nginx, "-c", str(nginx_dir / "nginx.conf"), "-p", str(nginx_dir)],
                       check=True)
        (workdir / "bare_app.py").write_text(BARE_APP)
        bare_port, app_port = free_port(), free_port()
        processes.append(_gunicorn("bare_app:app", bare_port, env, args, str(workdir)))
        if args.server == "uvicorn":
            processes.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("swiftmail")), "tracking", "serve",
                 "--bind", f"127.0.0.1:{app_port}", "--workers", str(args.workers)],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        else:
            processes.append(_gunicorn("swiftmail_web.public.wsgi:app", app_port, env, args))
        drain_command = [str(Path(sys.executable).with_name("swiftmail")), "tracking", "drain",
                         "--consumer", "bench-drainer", "--batch-size", str(args.drain_batch)]
        if args.drain_nice:
            drain_command = ["nice", "-n", str(args.drain_nice), *drain_command]
        if args.drain == "during":
            processes.append(subprocess.Popen(drain_command, env={**os.environ, **env},
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        app_server = processes[-1 - (args.drain == "during")]
        first_pixel = pixel_paths.read_text().splitlines()[0]
        _wait_http(f"http://127.0.0.1:{nginx_port}/t/o/x.gif")
        _wait_http(f"http://127.0.0.1:{bare_port}/t/o/x.gif")
        _wait_http(f"http://127.0.0.1:{app_port}{first_pixel}")
        pixel_script, click_script = _script(workdir, pixel_paths), _script(workdir, click_paths)
        results: dict[str, list[dict[str, float]]] = {
            "nginx": [], "bare": [], "pixel": [], "click": []}
        fixed: dict[str, list[dict[str, Any]]] = {"nginx": [], "pixel": [], "click": []}
        for _ in range(args.rounds if args.seconds > 0 else 0):
            results["nginx"].append(run_wrk(f"http://127.0.0.1:{nginx_port}/", args.seconds,
                                            args.connections, [], pixel_script))
            results["bare"].append(run_wrk(f"http://127.0.0.1:{bare_port}/", args.seconds,
                                           args.connections, [], pixel_script))
            results["pixel"].append(run_wrk(f"http://127.0.0.1:{app_port}/", args.seconds,
                                            args.connections, [], pixel_script))
            results["click"].append(run_wrk(f"http://127.0.0.1:{app_port}/", args.seconds,
                                            args.connections, [], click_script))
        for _ in range(args.rounds if args.rate > 0 else 0):
            if args.rate > 0:
                fixed["nginx"].append(_fixed_rate(nginx_port, pixel_paths, args))
                fixed["pixel"].append(_fixed_rate(app_port, pixel_paths, args, app_server))
                fixed["click"].append(_fixed_rate(app_port, click_paths, args, app_server))
        # Every acknowledged hit must become exactly one event.
        time.sleep(2)  # requests still in flight when wrk stopped finish their XADD
        backlog_at_end = int(client.xlen(stream))
        drain_started = time.monotonic()
        if args.drain == "after":
            processes.append(subprocess.Popen(drain_command, env={**os.environ, **env},
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        drain_cpu_at_start, counted_from = (0.0, 0.0), 0
        if args.drain == "after":  # the drainer's start-up (imports, connecting) is not drain work
            while client.xlen(stream) >= backlog_at_end > 0 and time.monotonic() - drain_started < 60:
                time.sleep(0.02)
            drain_cpu_at_start = _drainer_cpu_seconds(processes[-1], database)
            counted_from = int(client.xlen(stream))
        while client.xlen(stream) > 0 and time.monotonic() - drain_started < 600:
            time.sleep(0.5)
        drain_seconds = time.monotonic() - drain_started
        drain_cpu = None
        if args.drain == "after" and counted_from:
            ended = _drainer_cpu_seconds(processes[-1], database)
            drain_cpu = ((ended[0] - drain_cpu_at_start[0]) / counted_from,
                         (ended[1] - drain_cpu_at_start[1]) / counted_from)
        time.sleep(1)
        acknowledged = int(client.xinfo_stream(stream)["entries-added"])
        from swiftmail_core.db import app_db, tenant_tx
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.settings import load_settings

        runtime = start(load_settings(), process=ProcessKind.BENCH)
        with tenant_tx(tenant_id):
            events, distinct_keys = app_db.execute_sql(
                "SELECT count(*), count(DISTINCT source_key) FROM events").fetchone()
            rolled = app_db.execute_sql(
                "SELECT coalesce(sum(value), 0) FROM campaign_rollups WHERE dimension = '' "
                "AND metric IN ('opened.human', 'opened.machine', 'clicked.human', "
                "'clicked.machine')").fetchone()[0]
        runtime.close()
        if int(events) != acknowledged:
            raise Unfinished(f"{acknowledged} hits acknowledged, {events} events stored "
                             f"(backlog {client.xlen(stream)} after {drain_seconds:.0f} s)")
        summary: dict[str, Any] = {
            "server": args.server, "workers": args.workers,
            "worker_class": args.worker_class, "threads": args.threads,
            "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
            "hits_acknowledged": acknowledged, "events_stored": int(events),
            "rollup_hits": int(rolled), "distinct_source_keys": int(distinct_keys), "events_equal_hits": int(events) == acknowledged,
            "drain": args.drain, "drain_nice": args.drain_nice, "backlog_at_end": backlog_at_end,
            "drain_tail_seconds": round(drain_seconds, 1),
            "drain_tail_hits_per_second": round(backlog_at_end / drain_seconds)
            if drain_seconds > 0 else None,
            "drain_batch": args.drain_batch,
            # Burst mode: the drainer's own CPU and its PostgreSQL backends' per event stored.
            "drain_cpu_us_per_event": round(drain_cpu[0] * 1e6, 1) if drain_cpu else None,
            "drain_postgres_cpu_us_per_event": round(drain_cpu[1] * 1e6, 1) if drain_cpu else None,
        }
        for name, runs in results.items():
            if not runs:
                continue
            for metric in ("rps", "p50_ms", "p99_ms", "non_2xx"):
                summary[f"{name}_{metric}"] = median((r[metric] for r in runs), 2)
        for name in ("bare", "pixel", "click") if args.seconds > 0 else ():
            summary[f"{name}_vs_nginx"] = ratio(summary[f"{name}_rps"], summary["nginx_rps"])
        if args.rate > 0:
            summary["fixed_rate"] = _fixed_rate_summary(fixed, args.rate)
        return summary
    finally:
        for process in processes:
            stop(process, timeout=30)
        pid_file = nginx_dir / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
        from swiftmail_core import db

        db.disconnect()
        try:
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).delete(stream)
        except Exception as ex:  # cleanup only
            print(f"cleanup: {ex}", file=sys.stderr)
        drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"seconds": 1, "rounds": 1, "connections": 4,
                                        "workers": 1, "rate": 50, "rate_seconds": 1})
    options.add_argument("--seconds", type=int, default=10,
                         help="Seconds of each wrk (saturation) run; 0: no saturation runs.")
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--connections", type=int, default=50)
    options.add_argument("--workers", type=int, default=4)
    options.add_argument("--worker-class", default="gthread")
    options.add_argument("--threads", type=int, default=2)
    options.add_argument("--server", choices=("gunicorn", "uvicorn"), default="uvicorn",
                         help="uvicorn: the hot path as shipped (`swiftmail tracking serve`: "
                              "swiftmail_web.public.asgi, batched XADDs); gunicorn: the WSGI app.")
    options.add_argument("--drain", choices=("during", "after"), default="during",
                         help="Run the drainer during the load, or only after it (burst mode).")
    options.add_argument("--rate", type=float, default=2000,
                         help="Fixed offered load (hits/s) of the open-loop runs; 0: none.")
    options.add_argument("--rate-seconds", type=float, default=10)
    options.add_argument("--rate-connections", type=int, default=64,
                         help="Keep-alive connections the open-loop generator may use.")
    options.add_argument("--drain-batch", type=int, default=DEFAULT_BATCH_SIZE,
                         help=f"The drainer's --batch-size ({DEFAULT_BATCH_SIZE} as shipped).")
    options.add_argument("--drain-nice", type=int, default=10,
                         help="Run the drainer under nice(1) with this increment (10 as "
                              "shipped; 0: same priority as the server).")
    return options


if __name__ == "__main__":
    run("tracking_hits", measure, parser())
