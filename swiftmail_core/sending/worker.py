"""The sending worker: claim, render, send, record; and its huey queue.

PostgreSQL holds every message; huey (Redis) only wakes workers. A periodic
task (``tick``, every ``worker_tick_seconds``) runs the scheduler (start due
campaigns, resolve audiences, reclaim expired leases, finish campaigns) in
whichever worker wins the cluster-wide ``scheduler_ticks`` lease, and, when
work is due, enqueues ``drain`` tasks that claim and send batches until
nothing is due. Each tick also starts one background round on a thread of
its own (unless the last is still running) that runs due import/export jobs,
due journey steps (a bounded batch) and posts due webhook deliveries, so they
never occupy a sending thread; all claim their rows with leases in PostgreSQL
too. Losing the queue (a flushed
Redis, a killed consumer) loses only wake-ups.

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

from huey.consumer import Consumer, Scheduler

from swiftmail_core import redis_clients
from swiftmail_core.journeys import enrollment as journey_enrollment
from swiftmail_core.journeys import runner as journey_runner
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import outbox, sweeper, transport_failures
from swiftmail_core.sending.compose import Composer
from swiftmail_core.settings import Settings

log = logging.getLogger(__name__)
#: What rows without a transport (e.g. double opt-in confirmations) go through;
#: the same default as ``campaigns.transport``.
DEFAULT_TRANSPORT = "relay"
#: Import/export jobs one background task runs before the next tick.
BACKGROUND_JOBS_PER_TICK = 5
#: Journey enrollments (each up to its next wait) one background round runs, at most.
JOURNEY_ENROLLMENTS_PER_TICK = 2000
JOURNEY_SECONDS_PER_TICK = 20.0


class SendingWorker:
    """Claims batches from the outbox and sends them through their transports."""

    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        self.settings = settings
        self.plugins = plugins
        self.composer = Composer(settings, plugins)
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.policy = outbox.RetryPolicy(
            settings.send_retry_base_seconds, settings.send_max_attempts,
            settings.send_unknown_resend_hours)

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
        rows = {row.ledger_id: row for row in claimed}
        by_transport: dict[str, list[Any]] = {}
        for message in messages:
            # NOTE: by ledger id: the composer returns messages grouped by campaign,
            # not in claim order.
            transport_name = rows[message.ledger_id].transport or DEFAULT_TRANSPORT
            by_transport.setdefault(transport_name, []).append(message)
        for name, batch in by_transport.items():
            batch_rows = [rows[message.ledger_id] for message in batch]
            succeeded = False
            try:
                transport = self.plugins.transport(name)
            except Exception as ex:
                results, batch_rows = self._after_failure(
                    batch, batch_rows, f"transport {name!r} cannot be loaded: {ex}",
                    immediate=True)
            else:
                try:
                    results = list(transport.send(batch))
                except Exception as ex:
                    log.exception("transport %s failed a batch of %d", name, len(batch))
                    results, batch_rows = self._after_failure(
                        batch, batch_rows, f"transport {name!r} failed: {ex}", immediate=False)
                else:
                    succeeded = True
            # The results first: nothing may stand between a hand-off and its record (a
            # lost database there left the rows to their lease, and they went out again).
            outbox.record_results(
                batch_rows, results, message_ids={m.ledger_id: m.message_id for m in batch},
                policy=self.policy, plugins=self.plugins)
            if succeeded:
                transport_failures.note_success(batch_rows)
        return len(claimed)

    def _after_failure(self, batch: list[Any], batch_rows: list[outbox.ClaimedMessage],
                       reason: str, *, immediate: bool) -> tuple[list[Any], list[Any]]:
        """Count a failed batch; hold the rows of campaigns it paused, defer the others."""
        log.error("%s (a batch of %d)", reason, len(batch))
        paused = transport_failures.note_failure(
            batch_rows, reason, threshold=self.settings.send_pause_after_failures,
            immediate=immediate, plugins=self.plugins)
        held = [row for row in batch_rows if row.campaign_id in paused]
        outbox.release(held, status="held")
        # The rest retry with backoff and count the attempt: they expire, never loop.
        rest = [row for row in batch_rows if row.campaign_id not in paused]
        results = [outbox.SendResult(row.ledger_id, outbox.Outcome.DEFERRED, reason=reason)
                   for row in rest]
        return results, rest

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

    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        self.settings = settings
        self.plugins = plugins
        self.huey = redis_clients.huey(settings, settings.worker_queue_name, results=False)
        self._worker: SendingWorker | None = None
        self.drain = self.huey.task(name="drain")(self._drain)
        self.tick = self.huey.periodic_task(lambda _: True, name="tick")(self._tick)
        self._background: threading.Thread | None = None

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

        jobs = run_pending_jobs(self, limit=BACKGROUND_JOBS_PER_TICK)
        # NOTE: journeys run here, off the sending threads, a bounded batch per tick:
        # their emails join the outbox like any other and cannot starve a campaign.
        journey_enrollment.enroll_date_triggers()
        steps = journey_runner.run_due(JOURNEY_ENROLLMENTS_PER_TICK, owner=f"{self.worker.identity}:journeys",
                                       max_seconds=JOURNEY_SECONDS_PER_TICK)
        dispatcher = Dispatcher.from_settings(self.settings, self.plugins)
        return {"jobs": jobs, "journey_enrollments": steps,
                "webhook_deliveries": dispatcher.deliver_due()}

    def _start_background(self) -> None:
        """Run background work on its own thread, never on a sending thread."""
        if self._background is not None and self._background.is_alive():
            return  # still busy with the last round: this tick adds nothing
        self._background = threading.Thread(target=self._background_round, daemon=True,
                                            name="swiftmail-background")
        self._background.start()

    def _background_round(self) -> None:
        try:
            self.run_background()
        except Exception:
            log.exception("background round failed; the next tick retries")

    def _tick(self) -> dict[str, int]:
        self._start_background()
        done = sweeper.run_scheduled_tick(self.settings, self.plugins,
                                          owner=self.worker.identity) or {}
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
    return SendingQueue(runtime.settings, runtime.plugins)
