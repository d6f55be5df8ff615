"""What every benchmark shares: arguments, the one JSON line, exit codes, medians, peers.

A benchmark builds its parser with :func:`arguments` (which adds ``--smoke``),
does its work in one function that returns a dict of figures, and hands that
function to :func:`run`. ``run`` prints exactly ONE JSON line on stdout (while
the work runs, anything written to file descriptor 1, log lines of child
processes included, goes to stderr) and exits with:

* ``OK`` (0): the work finished; the line has ``"status": "ok"`` and the figures;
* ``UNFINISHED`` (1): the benchmark did not finish its work (a child died, a
  timeout, fewer messages delivered than sent, an unexpected error); the line
  has ``"status": "unfinished"`` (or ``"error"``) and the reason, never a rate;
* ``USAGE`` (2): bad arguments (argparse);
* ``MISSING_TOOL`` (3): a required program (Postfix ``smtp-sink``, ``wrk``,
  ``nginx``) is not installed (``.ci/system-packages`` installs them).

It also owns the scratch install a benchmark measures in (:func:`environment`,
:func:`drop_database`, :func:`analyze`) and the real peers (:func:`free_port`,
:func:`start_sink`, :func:`run_wrk`, :func:`stop`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import psycopg2
from psycopg2 import sql

OK, UNFINISHED, USAGE, MISSING_TOOL = 0, 1, 2, 3

ADMIN_URL = os.environ.get("SWIFTMAIL_BENCH_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "swiftmail-bench-password"
SINK = "/usr/sbin/smtp-sink"
INIT_LOCK = Path(tempfile.gettempdir()) / "swiftmail-bench-init.lock"
INSTALL_HINTS = {"smtp-sink": "postfix", "smtp-source": "postfix"}


class Unfinished(Exception):
    """The benchmark did not finish its work; the message says what is missing."""


class MissingTool(Exception):
    """A program the benchmark drives is not installed."""


# Arguments, the JSON line, exit codes ----------------------------------------------------


def arguments(doc: str | None, smoke: Mapping[str, Any]) -> argparse.ArgumentParser:
    """Return a parser with ``--smoke``, which sets ``smoke`` (option dest -> value).

    A smoke value replaces only an option left at its default, so
    ``--smoke --rounds 2`` keeps two rounds.
    """
    sizes = ", ".join(f"{name.replace('_', '-')} {value}" for name, value in smoke.items())
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help=f"a size that runs in seconds, for CI ({sizes})")
    parser.set_defaults(_smoke_sizes=dict(smoke))
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; with ``--smoke``, apply the smoke sizes to options left at default."""
    args = parser.parse_args(argv)
    sizes = args.__dict__.pop("_smoke_sizes", {})
    if args.smoke:
        for name, value in sizes.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


def emit(line: Mapping[str, Any]) -> None:
    """Print ``line`` as one JSON line on stdout."""
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def cpu_ticks() -> tuple[int, int]:
    """Return the machine's CPU ticks so far: all of them, and those stolen by the host.

    On a virtual machine, "steal" is time a vCPU was ready to run while the
    host ran something else: wall times stretch by it, CPU times do not.
    """
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # NOTE: user nice system idle iowait irq softirq steal (guest time is inside user).
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Return the share of the machine's CPU time the host stole between two ``cpu_ticks``."""
    total = after[0] - before[0]
    return round(100 * (after[1] - before[1]) / total, 1) if total > 0 else None


def run(name: str, work: Callable[[argparse.Namespace], Mapping[str, Any]],
        parser: argparse.ArgumentParser, argv: list[str] | None = None) -> NoReturn:
    """Run ``work(args)``, print its one JSON line and exit with the matching code."""
    args = parse(parser, argv)
    head: dict[str, Any] = {"benchmark": name, "smoke": args.smoke}
    ticks = cpu_ticks()
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)  # NOTE: log lines (JSON on stdout) of this process and its children
    try:
        result = dict(work(args))
        code, line = OK, {**head, "status": "ok", **result}
    except MissingTool as ex:
        code, line = MISSING_TOOL, {**head, "status": "missing-tool", "error": str(ex)}
    except Unfinished as ex:
        code, line = UNFINISHED, {**head, "status": "unfinished", "error": str(ex)}
    except (Exception, KeyboardInterrupt) as ex:
        traceback.print_exc()
        code, line = UNFINISHED, {**head, "status": "error", "error": f"{type(ex).__name__}: {ex}"}
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    if code != OK:
        print(f"{name}: {line['status']}: {line['error']}", file=sys.stderr)
    emit({**line, "cpus": os.cpu_count(),
          "load_average": [round(value, 2) for value in os.getloadavg()],
          "cpu_steal_percent": steal_percent(ticks, cpu_ticks())})
    sys.exit(code)


def require(tool: str) -> str:
    """Return the path of ``tool``; raise MissingTool naming the package that has it."""
    found = shutil.which(tool) or next(
        (str(path) for path in (Path("/usr/sbin") / tool, Path("/usr/bin") / tool)
         if path.exists()), None)
    if found is None:
        package = INSTALL_HINTS.get(tool, tool)
        raise MissingTool(f"{tool} is not installed: apt-get install {package} "
                          "(or run .ci/system-packages)")
    return found


# Figures -------------------------------------------------------------------------------


def median(values: Iterable[float], digits: int = 1) -> float:
    """Return the median of ``values`` rounded to ``digits``."""
    return round(statistics.median(list(values)), digits)


def ratio(value: float, baseline: float, digits: int = 3) -> float | None:
    """Return value/baseline rounded, or None when the baseline is zero."""
    return round(value / baseline, digits) if baseline else None


def per_second(count: int, seconds: float) -> float:
    """Return count/seconds; raise Unfinished when no time passed."""
    if seconds <= 0:
        raise Unfinished(f"{count} items in {seconds} s is not a rate")
    return count / seconds


# The scratch install -------------------------------------------------------------------


def environment(workdir: Path, database: str, role_prefix: str = "swiftmail_bench") -> dict[str, str]:
    """Return the environment a SwiftMail process of a benchmark sees.

    Benchmarks create a throwaway database through the production ``init``
    path with it and drop it afterwards (:func:`drop_database`).
    ``SWIFTMAIL_BENCH_ADMIN_URL`` names the PostgreSQL superuser to use.
    """
    params = psycopg2.extensions.parse_dsn(ADMIN_URL)
    params = {k: v for k, v in params.items() if k not in ("user", "password")}
    params["dbname"] = database
    return {
        "SWIFTMAIL_DATA_DIR": str(workdir),
        "SWIFTMAIL_CONFIG": str(workdir / "swiftmail.toml"),
        "DATABASE_URL": psycopg2.extensions.make_dsn(**params),
        "SWIFTMAIL_DATABASE_ADMIN_URL": ADMIN_URL,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "SWIFTMAIL_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_APP_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_OWNER_ROLE": f"{role_prefix}_owner",
        "SWIFTMAIL_DB_APP_ROLE": f"{role_prefix}_app",
        "SWIFTMAIL_DB_SYSTEM_ROLE": f"{role_prefix}_system",
        "SWIFTMAIL_LOG_LEVEL": "warning",
    }


def drop_database(database: str) -> None:
    """Drop a benchmark's scratch database, ending its sessions first."""
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s", (database,))
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
    admin.close()


def initialise_scratch() -> None:
    """Run ``swiftmail init`` for the install in ``os.environ``, one benchmark at a time.

    The roles are cluster-wide and shared by every benchmark: two ``init``
    runs at once fail with "tuple concurrently updated", so they take turns
    under a lock file (:data:`INIT_LOCK`).
    """
    from swiftmail_core.install import initialise

    with INIT_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        initialise(None, {})


@contextlib.contextmanager
def scratch_install(keep: bool = False) -> Iterator[dict[str, str]]:
    """Make a throwaway install (data dir, database, ``swiftmail init``); yield its environment.

    The environment is also put in ``os.environ`` for this process. Afterwards
    the database is dropped and the data dir removed, or with ``keep`` both
    stay (named on stderr).
    """
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-"))
    database = f"swiftmail_bench_{secrets.token_hex(4)}"
    env = environment(workdir, database)
    os.environ.update(env)
    try:
        initialise_scratch()
        yield env
    finally:
        if keep:
            print(f"kept database {database} (data dir {workdir})", file=sys.stderr)
        else:
            drop_database(database)
            shutil.rmtree(workdir, ignore_errors=True)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """Return (seconds, result) of one call of ``work``."""
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def analyze(database_url: str, tables: str) -> None:
    """ANALYZE ``tables`` as the admin, as autovacuum would shortly after a bulk load."""
    params = psycopg2.extensions.parse_dsn(database_url)
    admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
    params.update({k: v for k, v in admin.items() if k in ("user", "password")})
    connection = psycopg2.connect(**params)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")
    connection.close()


# Real peers ----------------------------------------------------------------------------


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """Start Postfix smtp-sink on 127.0.0.1:port (raise MissingTool without it)."""
    process = subprocess.Popen(
        [require("smtp-sink"), "-u", "nobody", "-m", "200", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise Unfinished("smtp-sink did not start")


def stop(process: subprocess.Popen[Any] | None, timeout: float = 5) -> None:
    """Stop a process this benchmark started (SIGTERM, then SIGKILL)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wrk_seconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if not match:
        raise Unfinished(f"cannot read wrk latency {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def run_wrk(url: str, seconds: int, connections: int, headers: list[str],
            script: Path | None = None) -> dict[str, float]:
    """Run wrk once; return requests/s, p50/p99 in ms, and non-2xx responses."""
    command = [require("wrk"), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True,
                            check=True, timeout=seconds + 60).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, float]:
    """Return requests/s, p50/p99 in ms and non-2xx responses from wrk's ``--latency`` output."""
    # NOTE: wrk pads a latency in whole seconds with a space ("1.67s "), not "ms" or "us".
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if "50" not in latency or "99" not in latency:
        raise Unfinished(f"wrk printed no latency distribution:\n{output}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _wrk_seconds(latency["50"]) * 1000,
        "p99_ms": _wrk_seconds(latency["99"]) * 1000,
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


# PostgreSQL backend CPU ---------------------------------------------------------------


class BackendCpu:
    """CPU seconds the PostgreSQL backends of one database spend during a measurement.

    A thread samples the backends every ``interval`` seconds from ``begin``
    to ``end``: the connection pool closes a connection older than its stale
    timeout (300 s) when it hands it out, so a backend can end in the middle
    of a long resolve and take its CPU seconds with it; sampled, at most
    ``interval`` of each such backend's time is lost.
    """

    def __init__(self, database_url: str, interval: float = 0.2) -> None:
        import psycopg2

        dsn = psycopg2.extensions.parse_dsn(database_url)
        admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
        dsn.update({k: v for k, v in admin.items() if k in ("user", "password")})
        self.connection = psycopg2.connect(**dsn)
        self.connection.autocommit = True
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def checkpoint(self) -> None:
        """Flush dirty buffers, so the previous run's writes are not on the next one's clock."""
        with self.connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")

    def sample(self) -> dict[int, float]:
        """Return each backend of the database (but this one) and its CPU seconds so far."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            pids = [pid for (pid,) in cursor.fetchall()]
        return {pid: seconds for pid in pids if (seconds := process_cpu(pid)) is not None}

    def begin(self) -> None:
        """Start measuring: the backends there now count from their present CPU seconds."""
        self._first = self.sample()
        self._last = dict(self._first)
        self._stop.clear()
        self._sampler = threading.Thread(target=self._run, name="backend-cpu", daemon=True)
        self._sampler.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record(self.sample())

    def _record(self, seen: dict[int, float]) -> None:
        for pid, seconds in seen.items():
            self._first.setdefault(pid, 0.0)  # NOTE: started during the measurement
            self._last[pid] = seconds

    def end(self) -> float:
        """Stop measuring; return the CPU seconds the backends spent since ``begin``."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        self._record(self.sample())
        return sum(self._last[pid] - first for pid, first in self._first.items())

    def close(self) -> None:
        """Close the admin connection."""
        self.connection.close()


def process_cpu(pid: int) -> float | None:
    """Return a local process's CPU seconds (user + system) from /proc, None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
