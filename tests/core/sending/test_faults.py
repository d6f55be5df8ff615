"""Faults that must lose nothing, with real worker processes.

Real PostgreSQL, real Redis, real `swiftmail worker` processes (killed with
SIGKILL), and a counting SMTP sink. The one allowed duplicate is a message
the sink accepted (250) just before its worker died, before the ledger
write: such a row is always claimed again (attempts >= 2), and the test
counts them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import lifecycle
from swiftmail_core.testing.smtp_sink import SmtpSink
from tests.core.sending.conftest import add_subscribers, make_campaign, make_list

BATCH = 50
DOMAIN = "faults.example.test"  # other tests' leftover rows never go here


def _ours(counter):  # type: ignore[no-untyped-def]
    """Keep the sink's counts for this file's recipients only."""
    return {address: n for address, n in counter.items() if address.endswith("@" + DOMAIN)}
SWIFTMAIL = str(Path(sys.executable).with_name("swiftmail"))
LOG_DIR = Path(os.environ.get("SWIFTMAIL_TEST_LOG_DIR", "/tmp"))


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
def spawn_worker(test_environ, run_id, sink, tmp_path, redis_client):  # type: ignore[no-untyped-def]
    """Factory: start a `swiftmail worker` process against the sink."""
    queue = f"{run_id}-faults-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        **os.environ, **test_environ,
        "SWIFTMAIL_WORKER_QUEUE_NAME": queue,
        "SWIFTMAIL_WORKER_TICK_SECONDS": "1",
        "SWIFTMAIL_WORKER_THREADS": "2",
        "SWIFTMAIL_SEND_LEASE_SECONDS": "3",
        "SWIFTMAIL_SEND_BATCH_SIZE": str(BATCH),
        "SWIFTMAIL_SEND_RETRY_BASE_SECONDS": "1",
        "SWIFTMAIL_PLUGIN_SMTP_HOST": "127.0.0.1",
        "SWIFTMAIL_PLUGIN_SMTP_PORT": str(sink.port),
        "SWIFTMAIL_LOG_LEVEL": "warning",
    }
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (LOG_DIR / f"{queue}-{len(processes)}.log").open("wb")
        process = subprocess.Popen([SWIFTMAIL, "worker"], env=env, stdout=log, stderr=log)
        processes.append(process)
        return process

    start.queue = queue  # type: ignore[attr-defined]
    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    for key in redis_client.scan_iter(f"*{queue}*"):
        redis_client.delete(key)


def _campaign(tenant, recipients: int):  # type: ignore[no-untyped-def]
    first, second = make_list(tenant.id), make_list(tenant.id)
    half = recipients // 2
    add_subscribers(tenant.id, first, half + 100, start=0, domain=DOMAIN)
    add_subscribers(tenant.id, second, recipients - half, start=half, domain=DOMAIN)
    campaign_id = make_campaign(tenant.id, [first, second])
    with system_tx() as database:  # a fast tenant: the test is about faults, not rate
        database.execute_sql(
            "UPDATE tenants SET send_rate_per_second = 100000, daily_quota = 1000000 WHERE id = %s",
            (str(tenant.id),))
    return campaign_id


def _wait(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _status(tenant, campaign_id) -> str:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant.id) as database:
        return database.execute_sql(
            "SELECT status FROM campaigns WHERE id = %s", (str(campaign_id),)).fetchone()[0]


def _ledger(tenant, campaign_id) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant.id) as database:
        rows = database.execute_sql(
            "SELECT email, status, attempts FROM messages WHERE campaign_id = %s",
            (str(campaign_id),)).fetchall()
    return {email.lower(): (status, attempts) for email, status, attempts in rows}


def test_kill_9_workers_mid_campaign_loses_nothing(tenant_a, sink, spawn_worker) -> None:  # type: ignore[no-untyped-def]
    recipients = 5000
    campaign_id = _campaign(tenant_a, recipients)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    worker = spawn_worker()
    kills = 0
    for threshold in (800, 2000, 3200):
        _wait(lambda threshold=threshold: sink.handler.count() >= threshold)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        worker = spawn_worker()
    _wait(lambda: _status(tenant_a, campaign_id) == "sent")
    ledger = _ledger(tenant_a, campaign_id)
    assert len(ledger) == recipients
    assert {status for status, _ in ledger.values()} == {"accepted"}
    received = _ours(sink.handler.per_recipient)
    assert set(received) == set(ledger)  # everyone, nobody else
    duplicates = {address: n for address, n in received.items() if n > 1}
    # Only the 250-then-crash window may double: rows claimed again after a kill.
    assert all(n == 2 and ledger[address][1] >= 2 for address, n in duplicates.items())
    assert len(duplicates) <= kills * BATCH * 2  # at most the in-flight batches (2 threads)
    print(f"kill -9 x{kills}: {len(duplicates)} duplicates in the 250-then-crash window")


def test_redis_flushed_mid_campaign_completes_without_doubles(  # type: ignore[no-untyped-def]
    tenant_a, sink, spawn_worker, redis_client
) -> None:
    recipients = 2000
    campaign_id = _campaign(tenant_a, recipients)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    spawn_worker()
    _wait(lambda: sink.handler.count() >= 500)
    flushed = 0
    for _ in range(3):  # everything the queue holds in Redis, several times
        for key in redis_client.scan_iter(f"*{spawn_worker.queue}*"):
            flushed += redis_client.delete(key)
        time.sleep(0.3)
    _wait(lambda: _status(tenant_a, campaign_id) == "sent")
    ledger = _ledger(tenant_a, campaign_id)
    assert {status for status, _ in ledger.values()} == {"accepted"}
    assert set(_ours(sink.handler.per_recipient)) == set(ledger)
    assert max(_ours(sink.handler.per_recipient).values()) == 1


def test_transport_4xx_for_a_while_slows_and_completes(tenant_a, sink, spawn_worker) -> None:  # type: ignore[no-untyped-def]
    recipients = 600
    campaign_id = _campaign(tenant_a, recipients)
    # The first 200 RCPTs are refused, however late the worker starts: a refusal
    # window in seconds was over before a loaded machine's worker sent anything.
    refusing = {"left": 200, "refused": 0}

    def reply(address: str) -> str | None:
        if refusing["left"] > 0:
            refusing["left"] -= 1
            refusing["refused"] += 1
            return "421 4.7.0 too many connections, slow down" if refusing["refused"] % 2 \
                else "451 4.7.1 rate limited, try later"
        return None

    sink.handler.rcpt_reply = reply
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    spawn_worker()
    _wait(lambda: _status(tenant_a, campaign_id) == "sent")
    ledger = _ledger(tenant_a, campaign_id)
    assert refusing["refused"] > 0
    assert {status for status, _ in ledger.values()} == {"accepted"}
    assert max(attempts for _, attempts in ledger.values()) >= 2
    assert max(_ours(sink.handler.per_recipient).values()) == 1
    assert len(_ours(sink.handler.per_recipient)) == recipients


def test_two_workers_pause_resume_no_recipient_twice(tenant_a, sink, spawn_worker) -> None:  # type: ignore[no-untyped-def]
    recipients = 3000
    campaign_id = _campaign(tenant_a, recipients)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    workers = [spawn_worker(), spawn_worker()]
    _wait(lambda: sink.handler.count() >= 700)
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    # Batches in flight finish: no row of the campaign is leased any more.
    _wait(lambda: "sending" not in {s for s, _ in _ledger(tenant_a, campaign_id).values()})
    paused_at = sum(_ours(sink.handler.per_recipient).values())
    time.sleep(1.5)
    assert sum(_ours(sink.handler.per_recipient).values()) == paused_at  # nothing new while paused
    assert paused_at < recipients
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    _wait(lambda: _status(tenant_a, campaign_id) == "sent")
    assert len(_ours(sink.handler.per_recipient)) == recipients
    assert max(_ours(sink.handler.per_recipient).values()) == 1
    for worker in workers:  # SIGINT is the graceful stop the unit files use
        worker.send_signal(signal.SIGINT)
    assert [worker.wait(60) for worker in workers] == [0, 0]
