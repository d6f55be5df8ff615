"""Private PostgreSQL servers on this machine; a real Citus cluster for tests.

``LocalServers`` starts PostgreSQL 15 instances (Debian's binaries), each
with its own data directory and port under a temporary directory, trust
authentication on 127.0.0.1 only, and the server settings it is given;
``stop`` removes everything even after a failed start. ``CitusCluster`` is
three of them with the Citus extension (built from ``../shared/vendor/citus``)
preloaded, one coordinator and two workers, started and stopped by the test
session; benchmarks start one plain server with the Ansible role's settings
(``bench/_server.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60


def citus_installed() -> bool:
    """Return True when the Citus extension is built into Debian's PostgreSQL 15."""
    return (PG_BIN / "initdb").exists() and Path("/usr/lib/postgresql/15/lib/citus.so").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


#: What the Citus suite's nodes run with: fast and disposable, never a measure of production.
CITUS_TEST_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "citus", "fsync": "off", "synchronous_commit": "off",
    "full_page_writes": "off", "max_connections": "200", "shared_buffers": "64MB",
    "citus.shard_count": "8",
}


class LocalServers:
    """Local PostgreSQL servers, each with the given settings."""

    def __init__(self, nodes: int = 1, first_port: int | None = None,
                 settings: Mapping[str, str] | None = None, prefix: str = "swiftmail-pg") -> None:
        """Plan the nodes: free ports, or ``first_port`` and the ones after it."""
        if first_port is None:
            self.ports = [_free_port() for _ in range(nodes)]
        else:
            self.ports = list(range(first_port, first_port + nodes))
        self.settings = dict(settings or {})
        self.base = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.ports[0]}-"))
        self.started: list[Path] = []

    def admin_url(self, port: int, database: str = "postgres") -> str:
        """Return a superuser URL of the node on ``port``."""
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def start(self) -> LocalServers:
        """Create and start every node; raise if one does not come up."""
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        for index, port in enumerate(self.ports):
            data = self.base / f"node{index}"
            subprocess.run(_as_postgres([
                str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
                check=True, capture_output=True, timeout=120)
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{data}'\n"
                    + "".join(f"{name} = '{value}'\n" for name, value in self.settings.items()))
            subprocess.run(_as_postgres([
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w",
                "-t", str(START_TIMEOUT), "start"]),
                check=True, capture_output=True, timeout=START_TIMEOUT + 10)
            self.started.append(data)
        return self

    def stop(self) -> None:
        """Stop every node that started and remove the data directories."""
        for data in self.started:
            subprocess.run(_as_postgres([
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True, timeout=60, check=False)
        self.started.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    def wait_ready(self) -> None:
        """Wait until every node accepts connections."""
        import psycopg2

        deadline = time.monotonic() + START_TIMEOUT
        for port in self.ports:
            while True:
                try:
                    psycopg2.connect(self.admin_url(port), connect_timeout=2).close()
                    break
                except psycopg2.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


class CitusCluster(LocalServers):
    """Three local PostgreSQL nodes with Citus preloaded."""

    def __init__(self, workers: int = 2, first_port: int | None = None) -> None:
        """Plan the nodes: free ports, or ``first_port`` and the ones after it."""
        super().__init__(workers + 1, first_port, CITUS_TEST_SETTINGS, prefix="swiftmail-citus")

    @property
    def coordinator_port(self) -> int:
        """Return the coordinator's port."""
        return self.ports[0]

    @property
    def worker_ports(self) -> list[int]:
        """Return the workers' ports."""
        return self.ports[1:]
