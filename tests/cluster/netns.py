"""Hosts for the cluster test: one network namespace each, joined by a bridge.

Every host is a namespace ``<prefix>-<name>`` with a loopback and an
``eth0`` on 10.77.0.0/24; the bridge lives in a namespace of its own
(``<prefix>-sw``), so the machine's own network is never touched and nothing
is routed anywhere else. ``Network.remove`` kills every process inside our
namespaces (they are ours: we created the namespaces) and deletes them;
``remove_leftovers`` does the same for namespaces a killed run left behind.
Needs root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.77.0"
PREFIX = "smc"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """Return why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "the cluster test needs root (network namespaces)"
    probe = f"{PREFIX}probe{secrets.token_hex(2)}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def kill_inside(namespace: str) -> None:
    """SIGKILL every process inside ``namespace`` (ours: we created it)."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_leftovers() -> None:
    """Remove namespaces of earlier runs of this test (ours by their prefix)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}x"):
            kill_inside(name)
            _ip("netns", "del", name, check=False)


class Network:
    """A bridge and named hosts with fixed addresses on it."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(2)
        self.prefix = f"{PREFIX}x{self.run}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, str] = {}  # name -> address
        self._index = 0

    def namespace(self, host: str) -> str:
        """Return the namespace name of ``host``."""
        return f"{self.prefix}-{host}"

    def start(self) -> Network:
        """Create the switch namespace and its bridge."""
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def add_host(self, host: str) -> str:
        """Create ``host`` on the bridge; return its address."""
        self._index += 1
        address = f"{SUBNET}.{self._index + 10}"
        namespace = self.namespace(host)
        outer, inner = f"{self.prefix}o{self._index}", f"{self.prefix}i{self._index}"
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "netns", self.switch)
        _ip("link", "set", inner, "netns", namespace)
        _ip("-n", self.switch, "link", "set", outer, "master", "br0")
        _ip("-n", self.switch, "link", "set", outer, "up")
        _ip("-n", namespace, "link", "set", inner, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        self.hosts[host] = address
        return address

    def link(self, host: str, up: bool) -> None:
        """Take a host's interface down (a cut cable) or bring it back."""
        _ip("-n", self.namespace(host), "link", "set", "eth0", "up" if up else "down")

    def spawn(self, host: str, argv: list[str], log: Path, *, user: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` (as ``user`` if given), output to ``log``."""
        command = ["ip", "netns", "exec", self.namespace(host)]
        if user:
            command += ["runuser", "-u", user, "--"]
        handle = log.open("ab")
        return subprocess.Popen([*command, *argv], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)

    def run_in(self, host: str, argv: list[str], *, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` to completion."""
        return subprocess.run(["ip", "netns", "exec", self.namespace(host), *argv],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)

    def remove(self) -> None:
        """Kill everything inside our namespaces and delete them (the veths go with them)."""
        for host in list(self.hosts):
            kill_inside(self.namespace(host))
        time.sleep(0.2)
        for host in list(self.hosts):
            _ip("netns", "del", self.namespace(host), check=False)
        _ip("netns", "del", self.switch, check=False)
        self.hosts.clear()
