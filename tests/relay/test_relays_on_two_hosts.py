"""Two relay processes as two hosts (127.0.0.2, 127.0.0.3), fed over the network.

Workers hand a campaign to both relays' platform intakes; the relays
deliver from their own source addresses to one aiosmtpd sink. Limits live
in Redis, so they hold across the relays in total: the sink never sees more
concurrent connections than the site's cap, and a sending domain's warm-up
cap counts every relay's mail (each relay's own IP would allow it again).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.smtp_sink import free_port
from tests.core.sending.conftest import (
    add_subscribers,
    ledger_counts,
    make_campaign,
    make_list,
    park_other_tenants_work,
)

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("127.0.0.2", "127.0.0.3")


class ConnectionCountingSink:
    """An aiosmtpd sink that records each message's client address and peak connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.max_open = 0
        self.by_client: collections.Counter[str] = collections.Counter()
        self.per_recipient: collections.Counter[str] = collections.Counter()
        sink = self

        class CountingSMTP(SMTP):
            def connection_made(self, transport: Any) -> None:
                with sink.lock:
                    sink.open += 1
                    sink.max_open = max(sink.max_open, sink.open)
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                with sink.lock:
                    sink.open -= 1
                super().connection_lost(error)

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                with sink.lock:
                    for recipient in envelope.rcpt_tos:
                        sink.per_recipient[recipient] += 1
                        sink.by_client[session.peer[0]] += 1
                return "250 2.0.0 queued"

        class CountingController(Controller):
            def factory(self) -> SMTP:
                return CountingSMTP(self.handler, **self.SMTP_kwargs)

        self.port = free_port()
        self.controller = CountingController(Handler(), hostname="127.0.0.1", port=self.port)

    def delivered(self) -> int:
        """Return how many recipients the sink accepted."""
        with self.lock:
            return sum(self.per_recipient.values())


def _wait_listening(host: str, port: int, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"relay on {host}:{port} did not listen"
            time.sleep(0.1)


class RelayHost:
    """One `swiftmail relay run` process standing for a relay host on ``host``."""

    def __init__(self, index: int, host: str, port: int, prefix: str, sink_port: int,
                 tmp_path: Path, environ: dict[str, str]) -> None:
        self.index, self.host, self.port, self.prefix = index, host, port, prefix
        self.sink_port = sink_port
        self.tmp_path = tmp_path
        self.environ = environ
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        """Return the intake's HOST:PORT."""
        return f"{self.host}:{self.port}"

    def start(self, **options: Any) -> RelayHost:
        """Write this host's config and start its relay; return once the intake listens."""
        index, host = self.index, self.host
        options = {"smtp_port": self.sink_port, **options}
        lines = ["[plugins.relay]",
                 f'spool_dir = "{self.tmp_path / f"spool{index}"}"',
                 f'intake_listen = "{host}:{self.port}"', 'submission_listen = "off"',
                 'relayhost = "127.0.0.1"',
                 'allow_networks = "127.0.0.0/8"', f'redis_prefix = "{self.prefix}"',
                 "scan_interval = 0.2", "retry_base = 0.5", "retry_cap = 1.0",
                 f'hostname = "relay{index}.test"', 'default_pool = "own"',
                 *(f"{key} = {value}" for key, value in options.items()
                   if not isinstance(value, dict)),
                 "[plugins.relay.source_addresses]", f'ip{index} = "{host}"',
                 "[plugins.relay.ip_pools]", f'own = ["ip{index}"]']
        for key, value in options.items():
            if isinstance(value, dict):
                for name, table in value.items():
                    lines.append(f"[plugins.relay.{key}.{name}]")
                    lines.extend(f"{k} = {v}" for k, v in table.items())
        config = self.tmp_path / f"relay{index}.toml"
        config.write_text("\n".join(lines) + "\n")
        # A file, not a pipe: a relay must never block on a log line nobody reads.
        self.log = self.tmp_path / f"relay{index}.log"
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "swiftmail_core.cli", "relay", "run"], cwd=ROOT,
                env={**self.environ, "SWIFTMAIL_CONFIG": str(config)},
                stdout=log, stderr=subprocess.STDOUT, text=True)
        _wait_listening(host, self.port, self.process, self.log)
        return self

    def kill(self) -> None:
        """Kill the relay at once (SIGKILL), as a host that dies."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """Stop the relay with SIGTERM (SIGKILL if it hangs)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@pytest.fixture
def relay_hosts(test_environ, targets, tmp_path, run_id):  # type: ignore[no-untyped-def]
    """(hosts, sink): a relay host (not started) on each of HOSTS, one sink for both."""
    sink = ConnectionCountingSink()
    sink.controller.start()
    port = free_port()
    prefix = f"{run_id}:two-hosts:{time.time_ns()}"
    hosts = [RelayHost(index, host, port, prefix, sink.port, tmp_path,
                       {**os.environ, **test_environ}) for index, host in enumerate(HOSTS)]
    yield hosts, sink
    for relay in hosts:
        relay.stop()
    sink.controller.stop()


@pytest.fixture
def two_relays(relay_hosts):  # type: ignore[no-untyped-def]
    """Factory: start both relay hosts with [plugins.relay] ``options``."""
    hosts, sink = relay_hosts

    def start(**options: Any) -> tuple[list[str], ConnectionCountingSink]:
        return [relay.start(**options).address for relay in hosts], sink

    return start


def _send_campaign(settings, tenant_id, relays: list[str], count: int, start: int = 0) -> Any:  # type: ignore[no-untyped-def]
    first = make_list(tenant_id)
    add_subscribers(tenant_id, first, count, start=start)
    campaign_id = make_campaign(tenant_id, [first], transport="relay")
    configured = dataclasses.replace(settings, send_batch_size=10, plugins={
        "relay_transport": {"mode": "network", "relays": relays}})
    plugins = PluginManager.load(configured)
    lifecycle.schedule_campaign(tenant_id, campaign_id)
    sweeper.tick(configured, plugins)
    park_other_tenants_work(tenant_id)
    SendingWorker(configured, plugins).drain(60)
    plugins.transport("relay").close()
    return campaign_id


def _wait_for(predicate, seconds: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_the_connection_cap_holds_across_two_relay_hosts(settings, runtime, tenant_a,
                                                         two_relays) -> None:  # type: ignore[no-untyped-def]
    relays, sink = two_relays(warmup="false",
                              policies={"default": {"max_connections": 2,
                                                    "messages_per_connection": 3}})
    campaign_id = _send_campaign(settings, tenant_a.id, relays, 120)
    counts = ledger_counts(tenant_a.id, campaign_id)
    assert counts.get("accepted", 0) + counts.get("delivered", 0) == 120, counts
    _wait_for(lambda: sink.delivered() >= 120)
    _wait_for(lambda: ledger_counts(tenant_a.id, campaign_id) == {"delivered": 120}, 30)
    assert sink.delivered() == 120 and max(sink.per_recipient.values()) == 1
    assert set(sink.by_client) == set(HOSTS)  # both relays took a share
    assert sink.max_open <= 2  # the shared cap, though each relay alone may open 2
    assert ledger_counts(tenant_a.id, campaign_id) == {"delivered": 120}


def test_a_domain_warmup_cap_holds_across_two_relay_hosts(settings, runtime, tenant_a,
                                                          two_relays) -> None:  # type: ignore[no-untyped-def]
    if 3600 - time.time() % 3600 < 90:  # the hourly window must not roll over mid-test
        time.sleep(3600 - time.time() % 3600 + 1)
    relays, sink = two_relays(warmup="true", warmup_start_per_hour=15)
    campaign_id = _send_campaign(settings, tenant_a.id, relays, 40)
    _wait_for(lambda: sink.delivered() >= 15)
    time.sleep(3)  # room for a cap that does not hold to show itself
    # Each relay's own source address would allow 15 an hour; the domain allows 15 in total.
    assert sink.delivered() == 15, dict(sink.by_client)
    assert all(count <= 15 for count in sink.by_client.values())
    counts = ledger_counts(tenant_a.id, campaign_id)
    assert counts.get("delivered", 0) <= 15 and sum(counts.values()) == 40


def test_a_dead_relay_is_skipped_and_delivers_its_spool_when_it_returns(
        settings, runtime, tenant_a, relay_hosts) -> None:  # type: ignore[no-untyped-def]
    (first, second), sink = relay_hosts
    first.start(warmup="false", smtp_port=free_port())  # its next hop is down: mail waits
    second.start(warmup="false")
    waiting = _send_campaign(settings, tenant_a.id, [first.address], 20)
    assert ledger_counts(tenant_a.id, waiting) == {"accepted": 20}
    first.kill()  # the host dies with 20 messages in its spool
    failed_over = _send_campaign(settings, tenant_a.id, [first.address, second.address], 20,
                                 start=100)
    _wait_for(lambda: ledger_counts(tenant_a.id, failed_over) == {"delivered": 20})
    assert ledger_counts(tenant_a.id, failed_over) == {"delivered": 20}
    assert dict(sink.by_client) == {HOSTS[1]: 20}
    first.start(warmup="false")  # the host returns, its next hop reachable again
    _wait_for(lambda: ledger_counts(tenant_a.id, waiting) == {"delivered": 20})
    assert ledger_counts(tenant_a.id, waiting) == {"delivered": 20}
    assert dict(sink.by_client) == {HOSTS[0]: 20, HOSTS[1]: 20}
    assert sink.delivered() == 40 and max(sink.per_recipient.values()) == 1
