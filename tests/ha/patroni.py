"""Patroni managing two PostgreSQL 15 nodes on loopback, with one etcd as its store.

Debian's ``patroni`` and ``etcd-server``. The cluster is synchronous
(``synchronous_mode: true``) and quick to notice a dead leader (``ttl: 10``,
``loop_wait: 1``), so a test sees an automatic failover in seconds. Every
process is ours, on free ports under a temporary directory; ``stop`` kills
them and removes the directory, even after a failed start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.ha.engines import PG_BIN, free_port

START_TIMEOUT = 90.0
TTL = 10
LOOP_WAIT = 1


def patroni_installed() -> bool:
    """Return True when patroni and etcd are on PATH."""
    return bool(shutil.which("patroni") and shutil.which("etcd"))


def config(base: Path, name: str, pg_port: int, rest_port: int, etcd_port: int, *,
           address: str = "127.0.0.1", etcd_address: str = "127.0.0.1",
           network: str = "127.0.0.1/32") -> str:
    """Return a Patroni node's configuration (JSON is YAML) for ``address``."""
    return json.dumps({
        "scope": "swiftmail-ha", "name": name,
        "log": {"level": "INFO", "dir": str(base / f"{name}-log")},
        "restapi": {"listen": f"{address}:{rest_port}",
                    "connect_address": f"{address}:{rest_port}"},
        "etcd3": {"hosts": [f"{etcd_address}:{etcd_port}"]},
        "bootstrap": {
            "dcs": {"ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": 3,
                    "maximum_lag_on_failover": 1048576, "synchronous_mode": True,
                    "postgresql": {"use_pg_rewind": False, "parameters": {
                        "fsync": "off", "full_page_writes": "off", "max_connections": 100,
                        "shared_buffers": "32MB", "wal_level": "replica",
                        "hot_standby": "on", "max_wal_senders": 5,
                        "max_replication_slots": 5}}},
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            "pg_hba": ["local all all trust", f"host replication all {network} trust",
                       f"host all all {network} trust"],
        },
        "postgresql": {
            "listen": f"{address}:{pg_port}", "connect_address": f"{address}:{pg_port}",
            "data_dir": str(base / name), "bin_dir": str(PG_BIN),
            "pgpass": str(base / f"{name}.pgpass"),
            "authentication": {"superuser": {"username": "postgres"},
                               "replication": {"username": "postgres"}},
            # Each node its own socket directory: nodes may share a port on different hosts.
            "parameters": {"unix_socket_directories": str(base / f"{name}-log")},
        },
    })


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid`` and, unless it is ours, its process group (a postmaster's backends)."""
    group = os.getpgid(pid)
    if group != os.getpgid(0):
        os.killpg(group, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)


class PatroniCluster:
    """One etcd and two Patroni-managed PostgreSQL nodes."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="swiftmail-ha-patroni-"))
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.nodes = {name: {"pg": free_port(), "rest": free_port()}
                      for name in ("node1", "node2")}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.base / f"{name}.out").open("wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.base, start_new_session=True)

    def start(self) -> PatroniCluster:
        """Start etcd, then both nodes; return once one leads and the other streams in sync."""
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._spawn("etcd", [
            "etcd", "--name", "ha", "--data-dir", str(self.base / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
            "--initial-cluster", f"ha=http://127.0.0.1:{self.etcd_peer_port}"])
        self._wait(lambda: self._get(f"http://127.0.0.1:{self.etcd_port}/health") is not None,
                   "etcd")
        for name, ports in self.nodes.items():
            (self.base / f"{name}-log").mkdir()
            if os.geteuid() == 0:
                shutil.chown(self.base / f"{name}-log", "postgres", "postgres")
            conf = self.base / f"{name}.yml"
            conf.write_text(config(self.base, name, ports["pg"], ports["rest"], self.etcd_port))
            argv = ["patroni", str(conf)]
            if os.geteuid() == 0:
                argv = ["runuser", "-u", "postgres", "--", *argv]
            self._spawn(name, argv)
            if name == "node1":
                self._wait(lambda: self.leader() == "node1", "node1 to lead")
        self._wait(self._in_sync, "node2 to stream synchronously")
        return self

    def _in_sync(self) -> bool:
        cluster = self._get(f"http://127.0.0.1:{self.nodes['node1']['rest']}/cluster")
        members = (cluster or {}).get("members", [])
        return any(m.get("role") == "sync_standby" and m.get("state") in ("running", "streaming")
                   for m in members)

    def _get(self, url: str) -> dict | None:  # type: ignore[type-arg]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our http://127.0.0.1
                return json.loads(response.read() or b"{}")
        except (OSError, ValueError):
            return None

    def _wait(self, condition, what: str, timeout: float = START_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.2)

    def leader(self) -> str | None:
        """Return the name of the node that answers ``GET /primary`` with 200, if any."""
        for name, ports in self.nodes.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['rest']}/primary",
                                            timeout=1) as response:
                    if response.status == 200:
                        return name
            except OSError:
                continue
        return None

    def admin_url(self, name: str, database: str = "postgres") -> str:
        """Return a superuser URL of one node."""
        return f"postgresql://postgres@127.0.0.1:{self.nodes[name]['pg']}/{database}"

    def url(self, database: str, user: str = "") -> str:
        """Return the multi-host URL that finds the leader."""
        hosts = ",".join(f"127.0.0.1:{ports['pg']}" for ports in self.nodes.values())
        who = f"{user}@" if user else ""
        return f"postgresql://{who}{hosts}/{database}?target_session_attrs=read-write"

    def kill(self, name: str) -> None:
        """SIGKILL a node's Patroni and its PostgreSQL, as a lost host would go."""
        pid_file = self.base / name / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if postmaster is not None:
            try:
                _kill_group(postmaster)
            except ProcessLookupError:
                pass

    def logs(self) -> str:
        """Return the tail of every log, for a failure message."""
        paths = [*self.base.glob("*.out"), *self.base.glob("*-log/*.log")]
        return "\n".join(f"--- {path}\n{path.read_text(errors='replace')[-2000:]}"
                         for path in sorted(paths))

    def stop(self) -> None:
        """Kill every process this cluster started and remove its directory."""
        for name in list(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        for name in self.nodes:
            pid_file = self.base / name / "postmaster.pid"
            if pid_file.exists():
                try:
                    _kill_group(int(pid_file.read_text().split()[0]))
                except (ProcessLookupError, ValueError):
                    pass
        self.processes.clear()
        shutil.rmtree(self.base, ignore_errors=True)
