"""Batching outcomes into the database without stalling delivery.

``add`` queues outcomes and returns a future that resolves once they are
committed; a background task writes batches from a thread, each after
waiting ``linger`` seconds for more outcomes to join it (most of a write's
database work is per statement, not per row: a write of 20 outcomes costs
about twice the database CPU per outcome of one of 100). A failed write
(database down) is retried with backoff, so outcomes are never dropped while
the process lives, and a finished message leaves the spool only after its
outcomes are committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from swiftmail_relay.outcomes import Outcome

log = structlog.get_logger("swiftmail.relay.sink")


class OutcomeSink:
    """Collect outcomes and write them in batches through ``record``."""

    def __init__(self, record: Callable[[Sequence[Outcome]], None], *, batch: int = 1000,
                 linger: float = 0.1) -> None:
        self.record = record
        self.batch = batch
        self.linger = linger
        self._pending: list[tuple[list[Outcome], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (a write in progress included), then stop.

        Gives up after ``timeout`` seconds when the database stays down;
        what was not written is then recorded again from the spool.
        """
        if self._task is None:
            return
        self._stopping = True
        self._stop.set()
        self._wake.set()
        _, pending = await asyncio.wait({self._task}, timeout=timeout)
        if pending:
            log.warning("outcome_sink_stop_timeout", queued=len(self._pending))
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)

    def add(self, outcomes: list[Outcome]) -> asyncio.Future[None]:
        """Queue outcomes; the returned future resolves when they are stored."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcomes, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            if self.linger > 0 and not self._stopping:
                try:
                    async with asyncio.timeout(self.linger):
                        await self._stop.wait()  # a stop writes at once
                except TimeoutError:
                    pass
            self._wake.clear()
            while self._pending:
                try:
                    await self._write_once()
                    delay = 0.5
                except Exception:
                    log.exception("outcome_write_failed")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            if self._stopping:
                return

    async def _write_once(self) -> None:
        taken: list[tuple[list[Outcome], asyncio.Future[None]]] = []
        count = 0
        while self._pending and count < self.batch:
            item = self._pending.pop(0)
            taken.append(item)
            count += len(item[0])
        try:
            await asyncio.to_thread(self.record, [o for items, _ in taken for o in items])
        except BaseException:
            self._pending[:0] = taken
            raise
        for _, future in taken:
            if not future.done():
                future.set_result(None)
