"""Which PostgreSQL a benchmark measures on: the machine's, or a private one set up as the role does.

``--server machine`` (the default) uses the PostgreSQL of
``SWIFTMAIL_BENCH_ADMIN_URL`` as it is configured. ``--server private``
initdb's a PostgreSQL 15 server of its own in a temporary directory on
``--server-port`` (``tests/citus/cluster.py``'s ``LocalServers``, the
machinery of the Citus mode), with the server settings the Ansible role
writes (``contrib/ansible/roles/swiftmail``: ``swiftmail_postgres_tuning``,
``swiftmail_postgres_shared_buffers`` sized from this machine's memory,
``swiftmail_postgres_max_connections``), measures there and removes it at
the end: the same figures on any fresh machine, whatever its PostgreSQL
says. Before measuring it writes and checkpoints 2 GB of WAL
(:func:`warm_wal`), so that, like a server that has been running, it
recycles WAL segments instead of creating each one. Not reproduced: the
role's WAL archiving to pgBackRest (a command per 16 MB segment, off the
import's backend) and TLS.

Either way the JSON line names the settings the server ran with
(:func:`server_settings`, read from ``pg_settings``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
import psycopg2
import yaml

from bench._common import MissingTool, Unfinished, environment
from tests.citus.cluster import PG_BIN, LocalServers

ROLE_DEFAULTS = (Path(__file__).resolve().parents[1]
                 / "contrib" / "ansible" / "roles" / "swiftmail" / "defaults" / "main.yml")
#: The environment variable that pins the private server's port (by hand runs on a shared machine).
PORT_VARIABLE = "SWIFTMAIL_BENCH_SERVER_PORT"
#: The settings a benchmark's JSON line reports, whichever server it ran on.
REPORTED = ("shared_buffers", "max_wal_size", "min_wal_size", "checkpoint_timeout",
            "checkpoint_completion_target", "wal_compression", "wal_level", "fsync",
            "synchronous_commit", "full_page_writes", "work_mem", "max_connections",
            "server_version")
#: WAL written (and checkpointed) before a private server is measured: a server that has
#: been running recycles its 16 MB WAL segments, a new one creates and zero-fills each
#: (about 45 ms apiece here: some 3.5 s of a million-contact import on a fresh cluster).
WARM_WAL_MB = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--server`` and ``--server-port`` to a benchmark's parser."""
    parser.add_argument(
        "--server", choices=("machine", "private"), default="machine",
        help="machine: the PostgreSQL of SWIFTMAIL_BENCH_ADMIN_URL as configured; private: "
             "a PostgreSQL 15 of its own with the Ansible role's settings, removed at the end")
    parser.add_argument(
        "--server-port", type=int, default=int(os.environ.get(PORT_VARIABLE) or 0) or None,
        help=f"the private server's port (default: a free one; ${PORT_VARIABLE})")


def memory_mb() -> int:
    """Return this machine's memory in MB, as Ansible's ``memtotal_mb`` fact."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise MissingTool("/proc/meminfo has no MemTotal")


def role_settings(memtotal_mb: int | None = None) -> dict[str, str]:
    """Return the server settings the Ansible role writes on a host with ``memtotal_mb``."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    # NOTE: plain Jinja2 evaluates the role's default expression as Ansible does
    # (it uses only Jinja2's own filters), so the benchmark cannot drift from the role.
    facts = {"ansible_facts": {"memtotal_mb": memtotal_mb or memory_mb()}}
    shared_buffers = jinja2.Environment().from_string(  # noqa: S701 (a setting, not HTML)
        str(defaults["swiftmail_postgres_shared_buffers"])).render(facts).strip()
    settings = {name: str(value) for name, value in defaults["swiftmail_postgres_tuning"].items()}
    if shared_buffers:
        settings["shared_buffers"] = shared_buffers
    settings["max_connections"] = str(defaults["swiftmail_postgres_max_connections"])
    return settings


@contextlib.contextmanager
def private_server(port: int | None = None) -> Iterator[LocalServers]:
    """Start a PostgreSQL 15 server with the role's settings; stop and remove it at the end."""
    if not (PG_BIN / "initdb").exists():
        raise MissingTool(f"{PG_BIN}/initdb is not installed: apt-get install postgresql-15")
    server = LocalServers(1, port, role_settings(), prefix="swiftmail-bench-pg")
    try:
        server.start()
        server.wait_ready()
        warm_wal(server.admin_url(server.ports[0]))
        yield server
    finally:
        server.stop()


def warm_wal(admin_url: str, megabytes: int = WARM_WAL_MB) -> None:
    """Write ``megabytes`` of WAL and checkpoint, so the server recycles segments as a running one does."""
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            # NOTE: a non-transactional logical message is 1 MB of WAL and nothing else.
            cursor.execute("SELECT count(pg_logical_emit_message(false, 'swiftmail-bench-warmup',"
                           " repeat('x', 1048576))) FROM generate_series(1, %s)", (megabytes,))
            cursor.execute("CHECKPOINT")
    finally:
        connection.close()


def install_environment(server: LocalServers, workdir: Path, database: str,
                        role_prefix: str = "swiftmail_bench") -> dict[str, str]:
    """Return the environment of an install whose database ``database`` is on ``server``."""
    port = server.ports[0]
    return {
        **environment(workdir, database, role_prefix),
        "DATABASE_URL": f"postgresql://127.0.0.1:{port}/{database}",
        "SWIFTMAIL_DATABASE_ADMIN_URL": server.admin_url(port),
    }


#: Keys of a benchmark's JSON line that its ``run`` adds (the parent's line has its own).
_LINE_HEAD = ("benchmark", "smoke", "status", "cpus", "load_average")


def machine_arguments(argv: Sequence[str]) -> list[str]:
    """Return ``argv`` with ``--server``/``--server-port`` replaced by ``--server machine``."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
        elif argument in ("--server", "--server-port"):
            skip = True
        elif not argument.startswith(("--server=", "--server-port=")):
            kept.append(argument)
    return [*kept, "--server", "machine"]


def measure_on_private(script: str, port: int | None, argv: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark ``script`` on a private server; return its figures and the settings.

    For a benchmark whose helpers reach PostgreSQL through
    ``SWIFTMAIL_BENCH_ADMIN_URL`` (read once, at import): the same script runs
    again in a child process with ``--server machine``, pointed at the server.
    """
    with private_server(port) as private:
        admin = private.admin_url(private.ports[0])
        completed = subprocess.run(
            [sys.executable, script, *machine_arguments(argv)],
            env={**os.environ, "SWIFTMAIL_BENCH_ADMIN_URL": admin},
            capture_output=True, text=True, check=False)
        sys.stderr.write(completed.stderr[-3000:])
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            raise Unfinished(f"the run on the private server exited with {completed.returncode}")
        figures = {key: value for key, value in json.loads(lines[-1]).items()
                   if key not in _LINE_HEAD}
        return {**figures, "server": "private", "server_settings": server_settings(admin)}


def server_settings(admin_url: str) -> dict[str, Any]:
    """Return the :data:`REPORTED` settings of the server at ``admin_url``, with units."""
    connection = psycopg2.connect(admin_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, current_setting(name) FROM pg_settings "
                           "WHERE name = ANY(%s) ORDER BY name", (list(REPORTED),))
            return dict(cursor.fetchall())
    finally:
        connection.close()
