"""Real HA engines on loopback for the failover tests: Redis with Sentinel, PostgreSQL pairs.

* ``RedisSentinelSet``: a redis-server master, one replica and three
  redis-sentinel processes (Debian's ``redis-sentinel``), quorum 2,
  ``down-after-milliseconds`` 1000.
* ``PostgresPair``: a PostgreSQL 15 primary and a streaming standby made with
  ``pg_basebackup -R``; synchronous replication (``synchronous_standby_names
  = '*'``) once the standby is streaming; promotion by hand (``pg_ctl
  promote``), standing in for Patroni's leader election.

Every process is started by us, on free ports under a temporary directory,
and ``stop`` kills exactly those processes and removes the directory, even
after a failed start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0
SERVICE = "swiftmail"


def free_port() -> int:
    """Return a port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(client: Any, process: subprocess.Popen[Any], what: str,
                         seconds: float = 20.0) -> None:
    """Ping ``client`` (redis-py) until the server answers, even with a refusal of its AUTH.

    Fails when ``process`` exits first ("refused its settings") or after ``seconds``.
    """
    import redis

    deadline = time.monotonic() + seconds
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError:
            return  # it answers: refusing the client's password is an answer
        except redis.ConnectionError:
            assert process.poll() is None, f"{what} refused its settings"
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)


def sentinel_binary() -> list[str] | None:
    """Return the command that runs a Sentinel, or None when none is installed."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel"]
    return None


class RedisSentinelSet:
    """A master, a replica and three Sentinels watching them as ``swiftmail``.

    With ``password`` the servers require it (``requirepass``, ``masterauth``)
    and the Sentinels give it (``sentinel auth-pass``); with
    ``sentinel_password`` the Sentinels require theirs (``requirepass``), as
    the Ansible role sets them up.
    """

    def __init__(self, down_after_ms: int = 1000, *, password: str | None = None,
                 sentinel_password: str | None = None) -> None:
        self.down_after_ms = down_after_ms
        self.password = password
        self.sentinel_password = sentinel_password
        self.base = Path(tempfile.mkdtemp(prefix="swiftmail-ha-redis-"))
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.base / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.base)

    def _server(self, name: str, port: int, *extra: str) -> None:
        folder = self.base / name
        folder.mkdir()
        if self.password:
            extra = (*extra, "--requirepass", self.password, "--masterauth", self.password)
        self._spawn(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", str(folder), *extra])

    def start(self) -> RedisSentinelSet:
        """Start the servers, then the Sentinels; wait until they know each other."""
        import redis

        self._server("master", self.master_port)
        self._wait_ping(self.master_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1",
                     str(self.master_port))
        self._wait_ping(self.replica_port)
        command = sentinel_binary()
        assert command is not None
        for index, port in enumerate(self.sentinel_ports):
            conf = self.base / f"sentinel{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.base}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + (f'sentinel auth-pass {SERVICE} "{self.password}"\n' if self.password else "")
                + (f'requirepass "{self.sentinel_password}"\n' if self.sentinel_password else ""))
            self._spawn(f"sentinel{index}", [*command, str(conf)])
        deadline = time.monotonic() + START_TIMEOUT
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            while True:
                try:
                    if (len(client.sentinel_slaves(SERVICE)) == 1
                            and len(client.sentinel_sentinels(SERVICE)) == 2):
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Sentinel on {port} did not see the set: {self.logs()}")
                time.sleep(0.2)
        replica = redis.Redis(host="127.0.0.1", port=self.replica_port, socket_timeout=1,
                              password=self.password)
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("replica did not sync")
            time.sleep(0.1)
        return self

    def _wait_ping(self, port: int) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                             password=self.password)
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    @property
    def sentinels(self) -> tuple[str, ...]:
        """Return the Sentinels as the ``redis_sentinels`` setting wants them."""
        return tuple(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def sentinel_client(self, port: int) -> Any:
        """Return a client of one Sentinel, with the Sentinels' password if they have one."""
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                           password=self.sentinel_password)

    def master_address(self) -> tuple[str, int]:
        """Ask a Sentinel where the master is now."""
        import redis

        for port in self.sentinel_ports:
            try:
                host, master = self.sentinel_client(port).sentinel_get_master_addr_by_name(SERVICE)
                return host, int(master)
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answers")

    def kill_master(self) -> None:
        """SIGKILL the master process (no shutdown, no last replication)."""
        process = self.processes["master"]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def event_times(self, event: str) -> list[float]:
        """Return the wall-clock times the Sentinels logged ``event`` (e.g. ``+switch-master``)."""
        import datetime as dt

        times = []
        for path in self.base.glob("sentinel*.log"):
            for line in path.read_text(errors="replace").splitlines():
                # 1234:X 05 Dec 2026 19:49:16.123 # +switch-master swiftmail ...
                parts = line.split(" ", 6)
                if len(parts) == 7 and parts[6].startswith(event + " "):
                    stamp = dt.datetime.strptime(" ".join(parts[1:5]), "%d %b %Y %H:%M:%S.%f")
                    times.append(stamp.replace(tzinfo=dt.UTC).timestamp())
        return times

    def logs(self) -> str:
        """Return the tail of every log, for a failure message."""
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}"
                         for path in sorted(self.base.glob("*.log")))

    def stop(self) -> None:
        """Kill every process this set started and remove its directory."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.processes.clear()
        shutil.rmtree(self.base, ignore_errors=True)


def _as_postgres(argv: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresPair:
    """A primary and a streaming standby on loopback, trust authentication."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="swiftmail-ha-pg-"))
        self.ports = {"primary": free_port(), "standby": free_port()}
        self.started: list[Path] = []

    def _run(self, argv: list[str], timeout: float = 120) -> None:
        result = subprocess.run(_as_postgres(argv), capture_output=True, timeout=timeout,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace')}")

    def _conf(self, name: str) -> str:
        data = self.base / name
        return (f"port = {self.ports[name]}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\nfsync = off\nfull_page_writes = off\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "max_connections = 100\nshared_buffers = 32MB\n")

    def data(self, name: str) -> Path:
        """Return a node's data directory."""
        return self.base / name

    def start_primary(self) -> None:
        """Create and start the primary."""
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        data = self.data("primary")
        self._run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                   "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(self._conf("primary"))
        self._start("primary")

    def start_standby(self) -> None:
        """Clone the primary with pg_basebackup -R, start it streaming, then make it synchronous."""
        data = self.data("standby")
        self._run([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1",
                   "-p", str(self.ports["primary"]), "-U", "postgres", "-D", str(data),
                   "-R", "-X", "stream", "--no-sync", "-c", "fast"])
        with (data / "postgresql.conf").open("a") as conf:
            # NOTE: alone after a promotion it must not wait for a standby that is gone.
            conf.write(self._conf("standby") + "synchronous_standby_names = ''\n")
        self._start("standby")
        import psycopg2

        admin = psycopg2.connect(self.admin_url("primary"))
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                deadline = time.monotonic() + START_TIMEOUT
                while True:
                    cursor.execute("SELECT count(*) FROM pg_stat_replication "
                                   "WHERE state = 'streaming'")
                    if cursor.fetchone()[0] == 1:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("standby did not stream")
                    time.sleep(0.1)
                cursor.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                cursor.execute("SELECT pg_reload_conf()")
                while True:
                    cursor.execute("SELECT sync_state FROM pg_stat_replication")
                    if cursor.fetchone()[0] == "sync":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("standby did not become synchronous")
                    time.sleep(0.1)
        finally:
            admin.close()

    def _start(self, name: str) -> None:
        data = self.data(name)
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w",
                   "-t", str(int(START_TIMEOUT)), "start"], timeout=START_TIMEOUT + 10)
        if data not in self.started:
            self.started.append(data)

    def crash(self, name: str) -> None:
        """Stop a node the way a crash does: every process gone at once, no checkpoint."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data(name)), "-m", "immediate",
                   "-w", "stop"], timeout=60)

    def promote(self, name: str) -> None:
        """Promote a standby and wait until it takes writes."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data(name)), "-w", "promote"],
                  timeout=60)

    def admin_url(self, name: str, database: str = "postgres") -> str:
        """Return a superuser URL of one node."""
        return f"postgresql://postgres@127.0.0.1:{self.ports[name]}/{database}"

    def url(self, database: str, user: str = "") -> str:
        """Return the libpq multi-host URL that finds whichever node takes writes."""
        hosts = ",".join(f"127.0.0.1:{self.ports[n]}" for n in ("primary", "standby"))
        who = f"{user}@" if user else ""
        return f"postgresql://{who}{hosts}/{database}?target_session_attrs=read-write"

    def stop(self) -> None:
        """Stop every node that started and remove the directory."""
        for data in self.started:
            subprocess.run(_as_postgres([
                str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True, timeout=60, check=False)
        self.started.clear()
        shutil.rmtree(self.base, ignore_errors=True)
