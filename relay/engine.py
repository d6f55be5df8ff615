"""The delivery engine: spool in, MX out, retries, expiry, outcomes.

One asyncio loop per relay process. Work items are (queue id, recipient
domain): the recipients of one message at one domain share a transaction.
On start the spool is rescanned and every message resumes; a periodic scan
picks up messages other processes spooled (listeners, the hand-off API) and
CLI control files. Throttle waits are internal deferrals: they never count
as an attempt and never inflate the retry exponent; expiry is checked every
time an item comes up, including after a throttle wait.

A wake-up for an item already in flight is kept, not dropped: the item runs
again when the current run ends. A watchdog (``swiftmail_relay.watchdog``)
reschedules anything due, idle and unqueued for ``overdue_after`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from swiftmail_relay import metrics, queue_ops, verp, watchdog
from swiftmail_relay.classify import DEFAULT_RULES, Reply, Rule, classify
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.delivery import Deliverer, Throttled
from swiftmail_relay.dkim import split_message
from swiftmail_relay.dsn import build_dsn
from swiftmail_relay.ip_pools import IpPools, SourceAddress
from swiftmail_relay.mx import DnsFailure, MxResolver, Route
from swiftmail_relay.outcomes import Outcome
from swiftmail_relay.progress import UnrecordedFinals
from swiftmail_relay.shaping import group_of, provider_groups
from swiftmail_relay.sink import OutcomeSink
from swiftmail_relay.spool import (
    BOUNCED,
    DELIVERED,
    EXPIRED,
    Envelope,
    Recipient,
    Spool,
    new_id,
)
from swiftmail_relay.spool_ledger import SpoolLedger, repair_spool
from swiftmail_relay.spool_lock import SpoolLock
from swiftmail_relay.throttle import NoThrottle, SitePolicy, Throttle
from swiftmail_relay.tls_policy import TlsPolicies

from swiftmail_core.settings import Settings

log = structlog.get_logger("swiftmail.relay")
#: Put in the ready queue by ``Relay.stop`` to wake a waiting worker so it ends.
_DRAIN = ("", "")
FULL_SCAN_SECONDS = 30.0
#: How long a finished message's id is remembered (a scan or notify racing its removal).
FINISHED_MEMORY_SECONDS = 60.0
WATCHDOG_SECONDS = 10.0  # how often the watchdog looks (at most)
#: How often the delivering relay forgets old records of ledger rows taken (spool_ledger).
PRUNE_SECONDS = 3600.0
WAITS_SECONDS = 2.0  # how often what messages wait for is published for the CLI
#: At most this many delivered messages wait for their outcomes' commit apart from a
#: delivery worker; beyond it a worker waits for the commit itself (back-pressure when the
#: database is slow or down: the 250s not yet recorded stay bounded).
COMMITTING_LIMIT = 2000


def backoff(attempts: int, config: RelayConfig, rng: random.Random) -> float:
    """Return seconds until the next try: doubling from retry_base, capped, ±20 % jitter."""
    delay = min(config.retry_cap, config.retry_base * 2 ** max(0, attempts - 1))
    return delay * rng.uniform(0.8, 1.2)


class Relay:
    """Deliver everything in one spool directory."""

    def __init__(
        self,
        settings: Settings,
        config: RelayConfig,
        *,
        spool: Spool | None = None,
        resolver: MxResolver | None = None,
        throttle: Throttle | None = None,
        sink: OutcomeSink | None = None,
        rules: tuple[Rule, ...] = DEFAULT_RULES,
        clock: Callable[[], float] = time.time,
        on_final: Callable[[Envelope], Any] | None = None,
        tls_policies: TlsPolicies | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.spool = spool or Spool(config.spool_dir)
        self.resolver = resolver or MxResolver(settings, config)
        self.throttle = throttle or NoThrottle(SitePolicy(
            max_connections=config.max_connections_per_site,
            messages_per_connection=config.messages_per_connection))
        self.tls_policies = tls_policies or TlsPolicies(settings, config)
        self.pools = IpPools.from_config(config)
        #: Provider groups name the ``provider`` label of the outcome metrics.
        self.provider_groups = provider_groups(config.provider_groups)
        self.deliverer = self._new_deliverer(None)
        self._deliverers: dict[str, Deliverer] = {}
        self.sink = sink
        self.rules = rules
        self.clock = clock
        self.on_final = on_final
        self.rng = random.Random()
        self.envelopes: dict[str, Envelope] = {}
        self._ready: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._timers: list[tuple[float, int, str, str]] = []
        self._sequence = itertools.count()
        self._timer_changed = asyncio.Event()
        self._inflight: set[tuple[str, str]] = set()
        self._queued: collections.Counter[tuple[str, str]] = collections.Counter()  # in _ready
        self._rerun: set[tuple[str, str]] = set()  # woken while in flight: run again after
        self.waits: dict[str, tuple[str, float | None]] = {}  # queue id: (reason, until)
        self._tasks: list[asyncio.Task[Any]] = []
        self._workers: list[asyncio.Task[Any]] = []
        self._draining = False  # stop(): workers finish what is in flight and take nothing new
        self._lock: SpoolLock | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._loading: set[asyncio.Task[None]] = set()
        self._loaded_at: dict[str, float] = {}
        self._finished: dict[str, float] = {}
        #: Finished messages whose outcomes are not committed yet (``_finish_after_commit``).
        self._committing: dict[str, tuple[Envelope, asyncio.Future[None]]] = {}
        self._removals: list[str] = []  # committed: to leave the spool (``_remove_finished``)
        self._removing: asyncio.Task[None] | None = None
        #: Final recipients whose outcomes are not committed yet: saved as pending.
        self._unrecorded = UnrecordedFinals()
        #: Per message: its state writes, one at a time (a lock and how many use it).
        self._state_writers: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._state_saves: set[asyncio.Task[None]] = set()  # saves after a commit
        self._last_full_scan = time.monotonic()
        self.delivered = 0

    # Lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Take the spool's delivery lock, rescan it, start workers, the timer and the scanner.

        Raises ConfigurationError when another relay already delivers from this spool.
        """
        self._lock = SpoolLock(self.spool.root).acquire()
        self.spool.clear_tmp()
        self.spool.scrub_free(0)  # nothing reuses free/ files while no relay runs
        self.spool.take_new()  # the full load below covers them
        # Before any delivery: a message a crash left without its ledger record must get
        # it while still spooled, or a resend of its row would be taken again once it is gone.
        repaired = await asyncio.to_thread(repair_spool, self.spool.root)
        if repaired:
            log.warning("spool_ledger_repaired", records=repaired)
        await asyncio.to_thread(self._load_all)
        if self.sink is not None:
            self.sink.start()
        self._draining = False
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.config.workers)]
        self._tasks = list(self._workers)
        self._tasks.append(asyncio.create_task(self._timer_loop()))
        self._tasks.append(asyncio.create_task(self._scan_loop()))
        self._tasks.append(asyncio.create_task(self._watchdog_loop()))
        log.info("relay_started", spool=str(self.spool.root), messages=len(self.envelopes))

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop workers and close connections (the spool keeps everything).

        Deliveries in flight finish first, for up to ``drain_seconds``: one
        cancelled between the receiver's 250 and its outcome and removal
        from the spool would be delivered again by the next relay. Workers
        take nothing new meanwhile; what they leave stays spooled.

        NOTE: a task is cancelled again until it ends: on Python 3.11
        ``asyncio.wait_for`` swallows a cancellation that lands as its inner
        future completes, and a loop around it would then run for ever.
        """
        self._draining = True
        running = [task for task in self._workers if not task.done()]
        for _ in running:
            self._ready.put_nowait(_DRAIN)  # wakes a worker waiting for work: it ends
        if running:
            _, unfinished = await asyncio.wait(running, timeout=drain_seconds)
            if unfinished:
                log.warning("relay_stop_drain_timeout", inflight=len(self._inflight))
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks = []
        try:
            try:
                await asyncio.wait_for(asyncio.gather(
                    self.deliverer.close(), *(d.close() for d in self._deliverers.values())), 15)
            except TimeoutError:
                log.warning("relay_close_timeout", tasks=[
                    repr(task.get_stack(limit=3)) for task in asyncio.all_tasks()
                    if task is not asyncio.current_task()])
            close = getattr(self.throttle, "close", None)
            if close is not None:
                try:
                    await asyncio.wait_for(close(), 5)
                except TimeoutError:
                    log.warning("throttle_close_timeout")
            if self.sink is not None:
                await self.sink.stop()
            await self._finish_committed()
            if self._state_saves:
                await asyncio.wait(set(self._state_saves))
        finally:
            if self._lock is not None:
                # Only now may another relay deliver from this spool.
                self._lock.release()
                self._lock = None

    async def idle(self, timeout: float = 30.0, horizon: float = 5.0) -> None:
        """Wait until nothing is due within ``horizon`` seconds (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            soon = self.clock() + horizon
            due = any(
                r.next_attempt_at <= soon for e in self.envelopes.values() for r in e.pending
            )
            if not due and not self._inflight and self._ready.empty() and not self._loading \
                    and not self._committing and not self._removing_now():
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("relay still busy")

    # Loading and scheduling --------------------------------------------------

    def _load_all(self) -> None:
        for queue_id in self.spool.scan():
            self._load(queue_id)

    def _read(self, queue_id: str) -> Envelope | None:
        """Read one envelope from the spool (blocking: call it in a thread)."""
        try:
            return self.spool.read_envelope(queue_id)
        except (OSError, ValueError) as ex:
            log.warning("spool_unreadable", queue_id=queue_id, error=str(ex))
            return None

    def _admit(self, queue_id: str, envelope: Envelope) -> None:
        """Take a read envelope and schedule its recipients' domains (on the loop)."""
        if queue_id in self.envelopes or queue_id in self._finished:
            return  # read twice (a scan and a notify raced): it is already here
        self.envelopes[queue_id] = envelope
        self._loaded_at[queue_id] = time.monotonic()
        for domain in {r.domain for r in envelope.pending}:
            when = min(r.next_attempt_at for r in envelope.pending if r.domain == domain)
            self._schedule(queue_id, domain, when)

    def _load(self, queue_id: str) -> None:
        envelope = self._read(queue_id)
        if envelope is not None:
            self._admit(queue_id, envelope)

    async def _load_many(self, queue_ids: Sequence[str]) -> None:
        """Read envelopes in a worker thread, then admit them on the loop."""
        wanted = [q for q in queue_ids if q not in self.envelopes and q not in self._finished]
        if not wanted:
            return
        envelopes = await asyncio.to_thread(lambda: [self._read(q) for q in wanted])
        for queue_id, envelope in zip(wanted, envelopes, strict=True):
            if envelope is not None:
                self._admit(queue_id, envelope)

    def notify(self, queue_ids: Sequence[str]) -> None:
        """Take newly spooled messages at once (in-process hand-off).

        Call it on the relay's loop; the envelopes are read in a worker thread.
        """
        task = asyncio.get_running_loop().create_task(self._load_many(list(queue_ids)))
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    def _schedule(self, queue_id: str, domain: str, when: float) -> None:
        if when <= self.clock():
            self._enqueue((queue_id, domain))
            return
        heapq.heappush(self._timers, (when, next(self._sequence), queue_id, domain))
        self._timer_changed.set()

    def _enqueue(self, key: tuple[str, str]) -> None:
        self._queued[key] += 1
        self._ready.put_nowait(key)

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed.clear()
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, queue_id, domain = heapq.heappop(self._timers)
                self._enqueue((queue_id, domain))
            delay = (self._timers[0][0] - now) if self._timers else 3600.0
            try:
                async with asyncio.timeout(min(delay, 1.0)):
                    await self._timer_changed.wait()
            except TimeoutError:
                pass

    async def _watchdog_loop(self) -> None:
        bound = self.config.overdue_after
        while True:
            await asyncio.sleep(min(WATCHDOG_SECONDS, max(bound / 4, 0.05)))
            self.check_overdue()

    def check_overdue(self) -> int:
        """Log, count and reschedule every lost wake-up (see ``watchdog``); return how many."""
        now = self.clock()
        found = watchdog.overdue(self.envelopes, self._inflight, self._queued, now,
                                 self.config.overdue_after)
        for queue_id, domain, late in found:
            log.warning("message_overdue", queue_id=queue_id, recipient_domain=domain,
                        overdue_seconds=round(late, 1))
            metrics.OVERDUE.inc()
            self._schedule(queue_id, domain, now)
        return len(found)

    async def _scan_loop(self) -> None:
        published = 0.0
        pruned = time.monotonic()
        while True:
            await asyncio.sleep(self.config.scan_interval)
            try:
                await self.scan_once()
            except Exception:
                log.exception("spool_scan_failed")
            if time.monotonic() - pruned >= PRUNE_SECONDS:
                pruned = time.monotonic()
                try:
                    await asyncio.to_thread(
                        SpoolLedger(self.spool).prune, self.config.dedupe_seconds)
                except Exception:
                    log.exception("spool_ledger_prune_failed")
            if time.monotonic() - published >= WAITS_SECONDS:
                published = time.monotonic()
                await self._publish_waits()

    async def _publish_waits(self) -> None:
        """Write what messages wait for where ``swiftmail relay queue --detail`` reads it."""
        waits = {q: w for q, w in self.waits.items() if q in self.envelopes}
        inflight = [queue_id for queue_id, _ in self._inflight]
        try:
            await asyncio.to_thread(queue_ops.write_waits, self.spool, waits, inflight)
        except OSError as ex:
            log.warning("waits_publish_failed", error=str(ex))

    async def scan_once(self, *, full: bool | None = None) -> None:
        """Load announced messages, apply control files; list the whole spool now and then.

        Writers announce each message in ``new/``, so a routine scan reads
        only that small directory; every ``FULL_SCAN_SECONDS`` (or when
        ``full``) the whole ``queue/`` is listed as well, to find anything
        missed and to forget messages the CLI held or purged.
        """
        started = time.monotonic()
        await self._load_many(await asyncio.to_thread(self.spool.take_new))
        if full is None:
            full = started - self._last_full_scan >= FULL_SCAN_SECONDS
        if full:
            self._last_full_scan = started
            await asyncio.to_thread(self.spool.scrub_free)
            present = set(await asyncio.to_thread(lambda: list(self.spool.scan())))
            # A finished message may still be listed while its file is removed.
            await self._load_many(sorted(present - set(self.envelopes)))
            busy = {queue_id for queue_id, _ in self._inflight}
            for queue_id in set(self.envelopes) - present - busy:
                # Held or purged by the CLI; never one loaded after the listing began.
                if self._loaded_at.get(queue_id, started) < started:
                    self.envelopes.pop(queue_id, None)
                    self._loaded_at.pop(queue_id, None)
        self._forget_finished(started - FINISHED_MEMORY_SECONDS)
        self._apply_controls(await asyncio.to_thread(self._take_controls))
        metrics.QUEUE_DEPTH.labels(state="active").set(len(self.envelopes))

    def _forget_finished(self, before: float) -> None:
        """Forget the ids of messages finished before ``before`` (monotonic seconds).

        ``_finished`` is kept in finishing order, so this stops at the first
        newer id instead of walking all of them on every scan (a busy relay
        remembers tens of thousands and scans ten times a second).
        """
        finished = self._finished
        while finished:
            queue_id = next(iter(finished))
            if finished[queue_id] >= before:
                return
            del finished[queue_id]

    def _take_controls(self) -> list[dict[str, Any]]:
        """Read and remove the CLI's control files (blocking: call it in a thread)."""
        commands = []
        for path in sorted(self.spool.control.glob("*.json")):
            try:
                command = json.loads(path.read_bytes())
                path.unlink()
            except (OSError, ValueError):
                continue
            if isinstance(command, dict):
                commands.append(command)
        return commands

    def _apply_controls(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            if command.get("action") != "retry":
                continue
            for queue_id, envelope in list(self.envelopes.items()):
                if command.get("tenant") and envelope.tenant_id != command["tenant"]:
                    continue
                for recipient in envelope.pending:
                    if command.get("domain") and recipient.domain != command["domain"]:
                        continue
                    recipient.next_attempt_at = 0.0
                    self._schedule(queue_id, recipient.domain, 0.0)

    # Working -----------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            if self._draining:
                return  # stopping: what is still queued stays in the spool
            queue_id, domain = key
            self._queued[key] -= 1
            if self._queued[key] <= 0:
                del self._queued[key]
            if key in self._inflight:
                self._rerun.add(key)  # run again once the current run ends
                continue
            self._inflight.add(key)
            try:
                await self._process(queue_id, domain)
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                log.exception("delivery_failed", queue_id=queue_id, domain=domain)
                await self._failed(queue_id, domain, ex)
            finally:
                self._inflight.discard(key)
                if key in self._rerun:
                    self._rerun.discard(key)
                    self._enqueue(key)

    async def _failed(self, queue_id: str, domain: str, error: Exception) -> None:
        """Defer an item whose run raised: an attempt, an event, backoff, and in time expiry.

        A message that meets the same bug on every try so ends as an expired
        bounce with a DSN, never retrying silently for ever at ``attempts: 0``.
        """
        envelope = self.envelopes.get(queue_id)
        if envelope is None:
            return
        due = [r for r in envelope.pending if r.domain == domain]
        reply = Reply(451, f"4.3.0 local error in delivery: {type(error).__name__}", local=True)
        outcomes: list[Outcome] = []
        try:
            for recipient in due:
                self._apply(envelope, recipient, reply, outcomes, permanent=False)
            await self._settle(envelope, domain, outcomes)
        except Exception:
            log.exception("delivery_failure_not_recorded", queue_id=queue_id, domain=domain)
            retry = self.clock() + self.config.retry_base
            for recipient in due:
                recipient.next_attempt_at = retry
            self._schedule(queue_id, domain, retry)

    def return_path(self, envelope: Envelope, recipient: Recipient) -> str:
        """Return the MAIL FROM for one recipient: VERP when a tenant is known.

        A VERP address the renderer wrote keeps its domain (the sending
        domain's return-path domain, ``bounces.<domain>``, so SPF aligns with
        From), encoded for this recipient's ledger row. Other tenant mail
        gets VERP when ``bounce_domain`` is set: on the sending domain's
        return-path domain when the submission recorded one, else on
        ``bounce_domain``.
        """
        if envelope.source == "dsn" or not envelope.mail_from:
            return ""
        secret = self.settings.secret_key
        if not envelope.tenant_id or not secret:
            return envelope.mail_from
        if verp.decode(secret, envelope.mail_from) is not None:
            domain = envelope.mail_from.rpartition("@")[2]
        elif self.config.bounce_domain:
            domain = envelope.return_path_domain or self.config.bounce_domain
        else:
            return envelope.mail_from
        return verp.encode(secret, envelope.tenant_id, recipient.ledger_id, domain)

    async def _process(self, queue_id: str, domain: str) -> None:
        envelope = self.envelopes.get(queue_id)
        if envelope is None:
            return
        now = self.clock()
        due = [r for r in envelope.pending if r.domain == domain]
        if not due:
            return
        later = min(r.next_attempt_at for r in due)
        if later > now:
            self._schedule(queue_id, domain, later)
            return
        self.waits.pop(queue_id, None)
        outcomes: list[Outcome] = []
        if now >= envelope.created_at + self.config.max_age:
            for recipient in due:
                self._finish(envelope, recipient, EXPIRED, Reply(
                    451, "4.4.7 message expired after its maximum age in the queue", local=True),
                    "expired", outcomes)
                metrics.EXPIRIES.inc()
            await self._settle(envelope, domain, outcomes)
            return
        try:
            route = await self.resolver.route(domain)
        except DnsFailure as failure:
            reply = Reply.parse(failure.reply, local=True)
            for recipient in due:
                self._apply(envelope, recipient, reply, outcomes, permanent=failure.permanent)
            await self._settle(envelope, domain, outcomes)
            return
        source = self.pools.choose(envelope.id, envelope.tenant_id, envelope.sender_domain)
        blocked = getattr(self.throttle, "blocked", None)
        wait = await blocked(route) if blocked is not None else 0.0
        if wait > 0:
            self._hold_back(envelope, due, wait, now)
            return
        try:
            body = await asyncio.to_thread(self.spool.read_body, queue_id)
        except FileNotFoundError:
            # Held or purged by the CLI meanwhile: forget it.
            self.envelopes.pop(queue_id, None)
            self._loaded_at.pop(queue_id, None)
            return
        groups: dict[str, list[Recipient]] = {}
        for recipient in due:
            groups.setdefault(self.return_path(envelope, recipient), []).append(recipient)
        policy = self.throttle.policy(route)
        held: list[Recipient] = []
        for mail_from, recipients in groups.items():
            if held:
                held.extend(recipients)
                continue
            # Admission happens with a connection in hand, right before MAIL.
            admit = functools.partial(self.throttle.admit, route, envelope, len(recipients),
                                      source=source.name if source else None)
            try:
                replies = await self._deliverer_for(source).send(
                    route, mail_from, [r.address for r in recipients], body,
                    messages_per_connection=policy.messages_per_connection,
                    smtputf8=envelope.smtputf8,
                    eight_bit=envelope.body_type.upper() == "8BITMIME", crlf=envelope.crlf,
                    admit=admit, on_wait=functools.partial(self._note_wait, queue_id, "slot"),
                )
            except Throttled as throttled:
                held.extend(recipients)
                wait = throttled.wait
                continue
            if self.waits.get(queue_id, ("",))[0] == "slot":
                del self.waits[queue_id]
            await self.throttle.observe(route, list(replies.values()))
            for recipient in recipients:
                self._apply(envelope, recipient, replies[recipient.address], outcomes,
                            route=route)
        if held:
            if not outcomes:
                self._hold_back(envelope, held, wait, now)
                return
            self._hold_back(envelope, held, wait, now, schedule=False)
        await self._settle(envelope, domain, outcomes)

    def _hold_back(self, envelope: Envelope, recipients: list[Recipient], wait: float,
                   now: float, *, schedule: bool = True) -> None:
        """Defer internally (a throttle): no attempt counted, no event, no backoff growth."""
        reason = getattr(wait, "reason", "rate") or "rate"
        metrics.THROTTLE_WAITS.labels(reason=reason).inc()
        # Expiry is checked while waiting too: wake no later than the deadline.
        wake = min(now + wait, envelope.created_at + self.config.max_age)
        for recipient in recipients:
            recipient.next_attempt_at = wake
        self._note_wait(envelope.id, reason, wake)
        if schedule:
            self._schedule(envelope.id, recipients[0].domain, wake)

    def _note_wait(self, queue_id: str, reason: str, until: float | None = None) -> None:
        """Remember what a message waits for (``swiftmail relay queue --detail``)."""
        self.waits[queue_id] = (reason, until)

    def _apply(
        self,
        envelope: Envelope,
        recipient: Recipient,
        reply: Reply,
        outcomes: list[Outcome],
        *,
        permanent: bool | None = None,
        route: Route | None = None,
    ) -> None:
        recipient.attempts += 1
        recipient.last_reply = str(reply)
        provider = (group_of(route.site, self.provider_groups) if route else None) or "other"
        if reply.ok:
            self._finish(envelope, recipient, DELIVERED, reply, "delivered", outcomes,
                         provider=provider)
            metrics.DELIVERIES.labels(provider=provider).inc()
            self.delivered += 1
            return
        is_permanent, bounce_class = classify(reply, self.rules)
        if permanent is not None:
            is_permanent = permanent
        recipient.bounce_class = bounce_class
        if is_permanent:
            self._finish(envelope, recipient, BOUNCED, reply, "bounced", outcomes,
                         provider=provider)
            metrics.BOUNCES.labels(provider=provider, bounce_class=bounce_class).inc()
            return
        delay = backoff(recipient.attempts, self.config, self.rng)
        expiry = envelope.created_at + self.config.max_age
        recipient.next_attempt_at = min(self.clock() + delay, expiry)
        metrics.DEFERRALS.labels(provider=provider, bounce_class=bounce_class).inc()
        self._outcome(envelope, recipient, "deferred", reply, outcomes, provider=provider)

    def _finish(self, envelope: Envelope, recipient: Recipient, status: str, reply: Reply,
                event: str, outcomes: list[Outcome], *, provider: str | None = None) -> None:
        recipient.status = status
        recipient.last_reply = str(reply)
        if status == EXPIRED:
            recipient.bounce_class = "expired"
        self._outcome(envelope, recipient, event, reply, outcomes, provider=provider)

    def _new_deliverer(self, source: SourceAddress | None) -> Deliverer:
        return Deliverer(
            self.config, acquire_slot=self.throttle.acquire_connection,
            release_slot=self.throttle.release_connection, tls_policies=self.tls_policies,
            source_address=source.ip if source else None)

    def _deliverer_for(self, source: SourceAddress | None) -> Deliverer:
        """Return the deliverer bound to ``source`` (one connection pool per source address)."""
        if source is None:
            return self.deliverer
        if source.ip not in self._deliverers:
            self._deliverers[source.ip] = self._new_deliverer(source)
        return self._deliverers[source.ip]

    def _outcome(self, envelope: Envelope, recipient: Recipient, event: str, reply: Reply,
                 outcomes: list[Outcome], *, provider: str | None = None) -> None:
        bounce_class = recipient.bounce_class if event in ("bounced", "deferred", "expired") else None
        # The per-message line an operator greps for (docs/relay.md "Per-message log").
        log.info("message_" + event, queue_id=envelope.id, tenant_id=envelope.tenant_id,
                 ledger_id=recipient.ledger_id, recipient_domain=recipient.domain,
                 provider=provider, bounce_class=bounce_class, attempt=recipient.attempts,
                 age_seconds=round(max(0.0, self.clock() - envelope.created_at), 1),
                 reply=str(reply)[:300])
        if not envelope.tenant_id:
            return
        outcomes.append(Outcome(
            tenant_id=uuid.UUID(envelope.tenant_id), type=event, email=recipient.address,
            ledger_id=recipient.ledger_id, bounce_class=bounce_class, reply=str(reply),
            source_key=f"relay:{envelope.id}:{recipient.address}:{event}:{recipient.attempts}",
            detail={"queue_id": envelope.id, "attempt": recipient.attempts,
                    "enhanced": reply.enhanced},
        ))

    def _write_dsn(self, envelope: Envelope, failed: list[Recipient]) -> str:
        """Spool an RFC 3464 DSN to a submission's reverse path (never a null one)."""
        headers, _ = split_message(self.spool.read_body(envelope.id))
        raw = build_dsn(envelope, failed, self.config.hostname, headers)
        dsn = Envelope(id=new_id(), mail_from="", recipients=[Recipient(envelope.mail_from)],
                       source="dsn")
        return self.spool.write(dsn, raw)

    async def _settle(self, envelope: Envelope, domain: str, outcomes: list[Outcome]) -> None:
        """Record outcomes, then remove a finished message or save its progress."""
        finished = not envelope.pending
        if outcomes and self.sink is not None:
            waiter = self.sink.add(outcomes)
            if finished:
                if self._finish_after_commit(envelope, waiter):
                    return  # the worker goes on; the message leaves the spool after the commit
                await waiter  # events committed before the spool forgets the message
            else:
                held = self._unrecorded.hold(envelope, outcomes)
                if held:
                    waiter.add_done_callback(
                        functools.partial(self._outcomes_committed, envelope, held))
        if envelope.source == "submission" and envelope.mail_from:
            # Each failure is reported once, when it happens, not when the last
            # recipient is final (a deferred one may take up to max_age).
            failed = [r for r in envelope.recipients
                      if r.status in (BOUNCED, EXPIRED) and not r.dsn_sent]
            if failed:
                dsn_id = await asyncio.to_thread(self._write_dsn, envelope, failed)
                for recipient in failed:
                    recipient.dsn_sent = True
                self.notify([dsn_id])
        if any(r.status == EXPIRED and r.ledger_id is not None for r in envelope.recipients):
            # After its expired event: a resend of that row is a new message, not a repeat.
            await asyncio.to_thread(SpoolLedger(self.spool).forget_expired, envelope)
        if finished:
            self._forget(envelope)
            await asyncio.to_thread(self.spool.remove, envelope.id)
            return
        await self._save_state(envelope)
        waiting = [r.next_attempt_at for r in envelope.pending if r.domain == domain]
        if waiting:
            self._schedule(envelope.id, domain, max(min(waiting), self.clock() + 0.001))

    async def _save_state(self, envelope: Envelope) -> None:
        """Save a message's progress: its writes one at a time, each the latest state.

        A final recipient whose outcome is not committed is saved as pending
        (``swiftmail_relay.progress``). A write that lands after the message
        finished and left the spool is removed again.
        """
        lock, users = self._state_writers.setdefault(envelope.id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                data = self._unrecorded.state(envelope)
                await asyncio.to_thread(self.spool.save_state, envelope, data)
                if envelope.id in self._finished:
                    await asyncio.to_thread(self.spool.remove_state, envelope.id)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._state_writers[envelope.id]

    def _outcomes_committed(self, envelope: Envelope, held: set[int],
                            waiter: asyncio.Future[None]) -> None:
        """Some recipients' final outcomes are committed: save them as final."""
        if waiter.cancelled() or waiter.exception() is not None:
            return  # not recorded: saved as pending, the next relay delivers and records them
        self._unrecorded.release(envelope.id, held)
        if (self._lock is None or envelope.id not in self.envelopes
                or envelope.id in self._committing or not envelope.pending):
            return  # stopped, or finished: its file leaves the spool
        task = asyncio.get_running_loop().create_task(self._save_state(envelope))
        self._state_saves.add(task)
        task.add_done_callback(self._state_saves.discard)

    def _forget(self, envelope: Envelope) -> None:
        """Drop a finished message from memory (remembered as finished) and report it final."""
        self._unrecorded.forget(envelope.id)
        self._finished.pop(envelope.id, None)  # to the end: kept in finishing order
        self._finished[envelope.id] = time.monotonic()
        self.waits.pop(envelope.id, None)
        self.envelopes.pop(envelope.id, None)
        self._loaded_at.pop(envelope.id, None)
        if self.on_final is not None:
            self.on_final(envelope)

    def _finish_after_commit(self, envelope: Envelope, waiter: asyncio.Future[None]) -> bool:
        """Let a finished message leave the spool once its outcomes commit, without a worker.

        So a delivery worker does not wait for the outcome write, and the
        sink can gather many outcomes a write. The message stays spooled
        (and loaded, so no scan takes it again) until the commit; then it is
        forgotten and removed in a batch (``_remove_finished``). Returns
        False (the worker waits, as before) for what must follow the commit
        in order (a submission's DSN, an expired row's ledger record) and
        when ``COMMITTING_LIMIT`` messages already wait.
        """
        if envelope.source == "submission" and envelope.mail_from:
            return False
        if any(r.status == EXPIRED and r.ledger_id is not None for r in envelope.recipients):
            return False
        if len(self._committing) >= COMMITTING_LIMIT or self._lock is None:
            return False
        self._committing[envelope.id] = (envelope, waiter)
        waiter.add_done_callback(functools.partial(self._committed, envelope.id))
        return True

    def _committed(self, queue_id: str, waiter: asyncio.Future[None]) -> None:
        """A finished message's outcomes are committed: forget it, queue its removal."""
        if self._committing.get(queue_id, (None, None))[1] is not waiter:
            return  # already handled (``stop``)
        envelope, _ = self._committing.pop(queue_id)
        if waiter.cancelled() or waiter.exception() is not None or self._lock is None:
            return  # not recorded: it stays spooled, and the next relay records it
        self._forget(envelope)
        self._removals.append(queue_id)
        if not self._removing_now():
            self._removing = asyncio.get_running_loop().create_task(self._remove_finished())

    def _removing_now(self) -> bool:
        return self._removing is not None and not self._removing.done()

    async def _remove_finished(self) -> None:
        """Remove committed messages from the spool, one thread hop per batch."""
        while self._removals:
            batch, self._removals = self._removals, []
            await asyncio.to_thread(self._remove_many, batch)

    def _remove_many(self, queue_ids: list[str]) -> None:
        for queue_id in queue_ids:
            try:
                self.spool.remove(queue_id)
            except OSError:
                log.exception("spool_remove_failed", queue_id=queue_id)

    async def _finish_committed(self) -> None:
        """At stop, after the sink's last write: finish every committed message.

        A message whose outcomes were not written (the database stayed down)
        stays spooled for the next relay.
        """
        for queue_id, (_, waiter) in list(self._committing.items()):
            if waiter.done():
                self._committed(queue_id, waiter)
        self._committing.clear()
        while self._removing_now():
            assert self._removing is not None
            await self._removing
