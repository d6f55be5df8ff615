"""The sending worker: claim, render, send, record; and its huey queue.

PostgreSQL holds every message; huey (Redis) only wakes workers. A periodic
task (``tick``, every ``worker_tick_seconds``) starts due campaigns,
reclaims expired leases, finishes campaigns and, when work is due, enqueues
``drain`` tasks that claim and send batches until nothing is due. Each tick
also enqueues one ``background`` task (unless one is still running in this
process) that runs due import/export jobs and posts due webhook deliveries;
both claim their rows with leases in PostgreSQL too. Losing the queue (a
flushed Redis, a killed consumer) loses only wake-ups.

Stop ``swiftmail worker`` with SIGINT for a graceful shutdown: huey lets
running tasks finish. SIGTERM interrupts them (their leases then expire and
the sweeper re-queues the rows).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from huey import RedisHuey
from huey.consumer import Consumer, Scheduler

from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import outbox, sweeper
from swiftmail_core.sending.compose import Composer
from swiftmail_core.settings import Settings

log = logging.getLogger(__name__)
#: What rows without a transport (e.g. double opt-in confirmations) go through;
#: the same default as ``campaigns.transport``.
DEFAULT_TRANSPORT = "relay"
#: Import/export jobs one background task runs before the next tick.
BACKGROUND_JOBS_PER_TICK = 5


class SendingWorker:
    """Claims batches from the outbox and sends them through their transports."""

    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        self.settings = settings
        self.plugins = plugins
        self.composer = Composer(settings, plugins)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.policy = outbox.RetryPolicy(
            settings.send_retry_base_seconds, settings.send_max_attempts)

    def process_batch(self, limit: int | None = None) -> int:
        """Claim, render, send and record one batch; return rows claimed."""
        owner = f"{self.identity}:{uuid.uuid4().hex[:12]}"
        claimed = outbox.claim_batch(
            owner, limit=limit or self.settings.send_batch_size,
            lease_seconds=self.settings.send_lease_seconds)
        if not claimed:
            return 0
        messages, failures = self.composer.compose(claimed)
        outbox.fail_unrenderable(claimed, failures)
        by_transport: dict[str, list[Any]] = {}
        for message, row in zip(messages, [c for c in claimed if c.ledger_id not in failures],
                                strict=True):
            by_transport.setdefault(row.transport or DEFAULT_TRANSPORT, []).append(message)
        rows = {row.ledger_id: row for row in claimed}
        for name, batch in by_transport.items():
            batch_rows = [rows[message.ledger_id] for message in batch]
            try:
                transport = self.plugins.transport(name)
            except Exception as ex:
                log.error("cannot send %d messages: %s", len(batch), ex)
                outbox.release(batch_rows, delay_seconds=60)
                continue
            try:
                results = list(transport.send(batch))
            except Exception as ex:
                log.exception("transport %s failed a batch of %d", name, len(batch))
                results = [outbox.SendResult(m.ledger_id, outbox.Outcome.DEFERRED,
                                             reason=f"transport error: {ex}") for m in batch]
            outbox.record_results(
                batch_rows, results, message_ids={m.ledger_id: m.message_id for m in batch},
                policy=self.policy, plugins=self.plugins)
        return len(claimed)

    def drain(self, max_seconds: float = 60.0) -> int:
        """Send batches until nothing is claimable or time is up; return rows claimed."""
        deadline = time.monotonic() + max_seconds
        total = 0
        while time.monotonic() < deadline:
            claimed = self.process_batch()
            if not claimed:
                break
            total += claimed
        return total


class SendingQueue:
    """The huey application of the sending machinery."""

    def __init__(self, settings: Settings, plugins: PluginManager, redis_url: str) -> None:
        self.settings = settings
        self.plugins = plugins
        self.huey = RedisHuey(settings.worker_queue_name, url=redis_url, results=False)
        self._worker: SendingWorker | None = None
        self.drain = self.huey.task(name="drain")(self._drain)
        self.tick = self.huey.periodic_task(lambda _: True, name="tick")(self._tick)
        self.background = self.huey.task(name="background")(self.run_background)
        self._background_running = threading.Event()

    @property
    def worker(self) -> SendingWorker:
        """Return this process's sending worker."""
        if self._worker is None:
            self._worker = SendingWorker(self.settings, self.plugins)
        return self._worker

    def _drain(self) -> int:
        sent = self.worker.drain()
        if sent:
            self.drain()  # more may be due: keep one wake-up in the queue
        return sent

    def run_background(self) -> dict[str, int]:
        """Run due import/export jobs and post due webhook deliveries."""
        from swiftmail_core.jobs import run_pending_jobs
        from swiftmail_core.webhooks.dispatcher import Dispatcher
        from swiftmail_core.webhooks.urls import UrlPolicy

        self._background_running.set()
        try:
            jobs = run_pending_jobs(self, limit=BACKGROUND_JOBS_PER_TICK)
            dispatcher = Dispatcher(str(self.settings.require("secret_key")),
                                    UrlPolicy.from_settings(self.settings), self.plugins)
            return {"jobs": jobs, "webhook_deliveries": dispatcher.deliver_due()}
        finally:
            self._background_running.clear()

    def _tick(self) -> dict[str, int]:
        if not self._background_running.is_set():
            self.background()
        done = sweeper.tick(self.settings, self.plugins)
        if sweeper.has_due_work() and self.huey.pending_count() < self.settings.worker_threads:
            for _ in range(self.settings.worker_threads):
                self.drain()
        return done

    def wake(self) -> None:
        """Enqueue drain tasks now (after scheduling or resuming)."""
        for _ in range(self.settings.worker_threads):
            self.drain()

    def consumer(self, threads: int | None = None) -> Consumer:
        """Return a huey consumer whose periodic tick runs every worker_tick_seconds."""
        tick_seconds = max(1, int(self.settings.worker_tick_seconds))

        class TickScheduler(Scheduler):
            periodic_task_seconds = tick_seconds

        class SendingConsumer(Consumer):
            scheduler_class = TickScheduler

        return SendingConsumer(
            self.huey, workers=threads or self.settings.worker_threads, worker_type="thread",
            periodic=True, scheduler_interval=1, max_delay=1.0, check_worker_health=True)


def build_queue(runtime: Any) -> SendingQueue:
    """Return the sending queue for a started runtime."""
    return SendingQueue(runtime.settings, runtime.plugins, runtime.redis_url)
