#!/usr/bin/env python3
"""Restart the API hosts behind HAProxy one at a time, through its runtime API.

For each server: put it in maintenance in every backend (no new requests),
wait until its requests in flight are done, run the restart command, wait
until the host's own ``/readyz`` answers 200, take it out of maintenance and
wait until HAProxy's health check has it UP; then the next. A server is only
taken out while another one is UP, so the service never loses its last host.

    python3 contrib/haproxy/rolling_restart.py --socket /run/haproxy/admin.sock \\
        --restart 'ssh {host} sudo systemctl restart swiftmail-api' api1 api2

Standard library only, so it runs on the HAProxy host as it is.
(docs/availability.md, "The API behind a load balancer".)
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

BACKENDS = ("swiftmail_api", "swiftmail_api_live")


class RestartError(RuntimeError):
    """A step of the rolling restart did not complete; the message says which."""


@dataclass
class HostTiming:
    """How long each phase of one host's restart took, in seconds."""

    server: str
    drain: float
    restart: float
    ready: float
    total: float


def runtime_command(socket_path: str, line: str, timeout: float = 5.0) -> str:
    """Send one command to HAProxy's runtime API and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(socket_path)
        connection.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def server_stats(socket_path: str) -> dict[tuple[str, str], dict[str, str]]:
    """Return ``show stat`` rows of the servers, keyed by (backend, server)."""
    text = runtime_command(socket_path, "show stat").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {(row["pxname"], row["svname"]): row for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")}


def _wait(what: str, condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RestartError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def set_state(socket_path: str, backends: tuple[str, ...], server: str, state: str) -> None:
    """Set a server's administrative state (``ready``, ``drain``, ``maint``) in each backend."""
    for backend in backends:
        answer = runtime_command(socket_path, f"set server {backend}/{server} state {state}")
        if answer.strip():
            raise RestartError(f"set server {backend}/{server} state {state}: {answer.strip()}")


def restart_host(
    socket_path: str,
    server: str,
    restart: Callable[[str, str], None],
    backends: tuple[str, ...] = BACKENDS,
    timeout: float = 120.0,
) -> HostTiming:
    """Take one server out, restart it with ``restart(server, address)``, put it back."""
    started = time.monotonic()
    stats = server_stats(socket_path)
    primary = backends[0]
    if (primary, server) not in stats:
        raise RestartError(f"HAProxy has no server {primary}/{server}")
    others_up = [name for (backend, name), row in stats.items()
                 if backend == primary and name != server and row["status"].startswith("UP")]
    if not others_up:
        raise RestartError(f"no server but {server} is UP in {primary}: restarting it "
                           "would leave no host")
    address = stats[(primary, server)]["addr"]
    set_state(socket_path, backends, server, "maint")

    def idle() -> bool:
        rows = server_stats(socket_path)
        return all(rows[(backend, server)]["scur"] == "0" for backend in backends)

    drain = _wait(f"{server}'s requests in flight", idle, timeout)
    restart_started = time.monotonic()
    restart(server, address)
    restart_seconds = time.monotonic() - restart_started
    ready_started = time.monotonic()
    _wait(f"http://{address}/readyz to answer 200", lambda: _ready(address), timeout)
    set_state(socket_path, backends, server, "ready")
    _wait(f"HAProxy to report {primary}/{server} UP",
          lambda: server_stats(socket_path)[(primary, server)]["status"] == "UP", timeout)
    ready = time.monotonic() - ready_started
    return HostTiming(server, round(drain, 2), round(restart_seconds, 2), round(ready, 2),
                      round(time.monotonic() - started, 2))


def rolling_restart(
    socket_path: str,
    servers: list[str],
    restart: Callable[[str, str], None],
    backends: tuple[str, ...] = BACKENDS,
    timeout: float = 120.0,
) -> list[HostTiming]:
    """Restart ``servers`` one at a time; return each one's timings."""
    return [restart_host(socket_path, server, restart, backends, timeout) for server in servers]


def _shell_restart(template: str) -> Callable[[str, str], None]:
    def restart(server: str, address: str) -> None:
        host = address.rsplit(":", 1)[0].strip("[]")
        command = template.format(server=server, address=address, host=host)
        subprocess.run(command, shell=True, check=True)  # noqa: S602 - the operator's command

    return restart


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the rolling restart; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="HAProxy's admin-level stats socket")
    parser.add_argument("--restart", required=True,
                        help="shell command restarting one host; {server}, {address} and "
                             "{host} are replaced (it returns once the old process is gone)")
    parser.add_argument("--backend", action="append", dest="backends",
                        help=f"backends holding the servers [default: {' '.join(BACKENDS)}]")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds each wait may take [default: 120]")
    parser.add_argument("servers", nargs="+", help="server names, as in haproxy.cfg")
    args = parser.parse_args(argv)
    backends = tuple(args.backends or BACKENDS)
    try:
        for server in args.servers:
            timing = restart_host(args.socket, server, _shell_restart(args.restart),
                                  backends, args.timeout)
            print(f"{server}: back in service after {timing.total} s (drain {timing.drain} s, "
                  f"restart {timing.restart} s, ready {timing.ready} s)", flush=True)
    except (RestartError, OSError, subprocess.CalledProcessError) as ex:
        print(f"rolling restart stopped: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
