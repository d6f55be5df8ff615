"""Which ledger rows a spool has taken: a durable record that makes resends harmless.

A worker whose hand-off answer was lost (the relay died mid-request) does
not know whether the relay spooled the batch, so it sends the batch to the
same relay again once that relay answers (``plugins/relay_transport.py``).
This record lets the relay answer such a repeat "already have it" instead
of spooling (and delivering) the message twice.

Layout: ``spool_dir/ledger/`` holds one symbolic link per ledger row,
``<tenant_id>.<ledger_id>`` pointing at the queue id that carries it, and
one ``q.<queue_id>`` link per message ``swiftmail relay reinject`` moved in.
A link is created atomically with its target inside it, and is durable once
the directory is fsynced. ``write_once`` (the intake's and reinject's way in)
renames the messages into ``queue/`` first, then creates their links, then
fsyncs: a crash in between leaves a message without its link, never a link
without its message (which would lose the message). Such gaps are closed by
``repair`` from the spool files themselves: when the delivering relay starts
(before it delivers), at every intake start, and by
the next writer when the last one died holding the lock (``.writing`` left).

Writers hold ``ledger/.lock`` (``flock``, also across the ``--no-deliver``
intake processes sharing a spool) from the repeat check to the fsync, so
two copies of one ledger row racing in are spooled once. The slow part of a
write (the message files and their flush) happens before the lock.

Links are kept while their message is in the spool and, after it is gone
(final), until they are ``intake_dedupe_hours`` old (``prune``; default the
relay's ``max_age`` plus two days, longer than a worker resends).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog
from swiftmail_relay.spool import EXPIRED, Envelope, Spool, SpoolError, _fsync_dir, _wrap

log = structlog.get_logger("swiftmail.relay.spool_ledger")
LOCK_NAME = ".lock"
WRITING_NAME = ".writing"


class RepeatInFlightError(SpoolError):
    """Another copy of some of these rows is being spooled right now: try again shortly."""


def ledger_key(tenant_id: str | None, ledger_id: int) -> str:
    """Return the record's name for one ledger row of one tenant."""
    return f"{tenant_id or '-'}.{int(ledger_id)}"


def moved_key(queue_id: str) -> str:
    """Return the record's name for a message moved in by reinject."""
    return f"q.{queue_id}"


def envelope_keys(envelope: Envelope) -> list[str]:
    """Return the record names one envelope answers for.

    A recipient the relay gave up on (expired) answers for nothing: its row
    may be queued again (resend to failed), and that is a new message.
    """
    keys = [ledger_key(envelope.tenant_id, r.ledger_id) for r in envelope.recipients
            if r.ledger_id is not None and r.status != EXPIRED]
    if envelope.moved_from:
        keys.append(moved_key(envelope.id))
    return keys


class SpoolLedger:
    """The record of ledger rows (and moved messages) one spool has taken."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.dir = spool.root / "ledger"
        self.dir.mkdir(parents=True, exist_ok=True)

    def find(self, key: str) -> str | None:
        """Return the queue id recorded under ``key``, None when there is none."""
        try:
            return os.readlink(self.dir / key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as ex:
            raise _wrap(ex, "read its ledger record") from ex

    def holds(self, queue_id: str) -> bool:
        """Return True when the message is in the spool (queued or held)."""
        return any((directory / f"{queue_id}.msg").exists()
                   for directory in (self.spool.queue, self.spool.hold))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock; repair first if the last holder died mid-write."""
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            sentinel = self.dir / WRITING_NAME
            if sentinel.exists():
                log.warning("spool_ledger_repair", reason="a writer died mid-write")
                self.repair()
            os.close(os.open(sentinel, os.O_WRONLY | os.O_CREAT, 0o600))
            try:
                yield
            finally:
                # NOTE: only a process that dies inside leaves it: the next holder repairs.
                sentinel.unlink()
        finally:
            os.close(fd)  # releases the flock

    def record(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Create the links ``key -> queue id`` not there yet, then fsync (hold the lock)."""
        try:
            for key, queue_id in pairs:
                with contextlib.suppress(FileExistsError):
                    os.symlink(queue_id, self.dir / key)
            if pairs:
                _fsync_dir(self.dir)
        except OSError as ex:
            raise _wrap(ex, "record its ledger rows") from ex

    def forget_expired(self, envelope: Envelope) -> None:
        """Drop the records of the envelope's expired recipients (their rows may come again)."""
        for recipient in envelope.recipients:
            if recipient.ledger_id is None or recipient.status != EXPIRED:
                continue
            key = ledger_key(envelope.tenant_id, recipient.ledger_id)
            if self.find(key) == envelope.id:  # not a newer copy's record
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / key)

    def repair(self) -> int:
        """Record every queued or held message's rows that lack a link; return how many."""
        missing = []
        for directory in (self.spool.queue, self.spool.hold):
            for queue_id in list(self.spool.scan(directory)):
                try:
                    envelope = self.spool.read_envelope(queue_id, directory)
                except (OSError, ValueError, SpoolError):
                    continue  # removed meanwhile, or unreadable (reinject reports those)
                missing.extend((key, queue_id) for key in envelope_keys(envelope)
                               if not os.path.lexists(self.dir / key))
        self.record(missing)
        return len(missing)

    def copy_from(self, other: SpoolLedger) -> int:
        """Record here every link of ``other`` missing here (hold the lock); return how many."""
        pairs = []
        for entry in os.scandir(other.dir):
            if entry.name.startswith(".") or not entry.is_symlink():
                continue
            if not os.path.lexists(self.dir / entry.name):
                pairs.append((entry.name, os.readlink(entry.path)))
        self.record(pairs)
        return len(pairs)

    def prune(self, max_age: float, now: float | None = None) -> int:
        """Remove links older than ``max_age`` seconds whose message is gone; return how many."""
        cutoff = (now if now is not None else time.time()) - max_age
        removed = 0
        for entry in os.scandir(self.dir):
            if entry.name.startswith("."):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if self.holds(os.readlink(entry.path)):
                    continue
                os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
        return removed


def _repeat_of(ledger: SpoolLedger, envelope: Envelope) -> tuple[str | None, list[int]]:
    """Return (queue id it repeats, indexes of recipients already recorded)."""
    if envelope.moved_from:
        # A moved message repeats only itself: its rows' records came along with it.
        if ledger.holds(envelope.id) or ledger.find(moved_key(envelope.id)):
            return envelope.id, list(range(len(envelope.recipients)))
        return None, []
    seen: list[int] = []
    first: str | None = None
    for index, recipient in enumerate(envelope.recipients):
        if recipient.ledger_id is None:
            continue
        queue_id = ledger.find(ledger_key(envelope.tenant_id, recipient.ledger_id))
        if queue_id is not None:
            seen.append(index)
            first = first or queue_id
    return first, seen


def write_once(spool: Spool, items: Sequence[tuple[Envelope, bytes]]) -> list[tuple[str, bool]]:
    """Spool the messages whose ledger rows this spool has not taken yet.

    Returns, per item, (queue id, True when it was a repeat: the queue id is
    the earlier copy's). A message some of whose recipients are repeats is
    spooled for the others only. Raises ``SpoolError`` when nothing could be
    kept (``RepeatInFlightError`` when another copy of only some recipients
    of a message raced in: try again).
    """
    ledger = SpoolLedger(spool)
    answers: list[tuple[str, bool] | None] = [None] * len(items)
    fresh: list[int] = []
    for index, (envelope, _) in enumerate(items):
        repeat, seen = _repeat_of(ledger, envelope)
        if repeat is not None and len(seen) == len(envelope.recipients):
            answers[index] = (repeat, True)
            continue
        if seen:
            envelope.recipients = [r for i, r in enumerate(envelope.recipients) if i not in seen]
        fresh.append(index)
    chosen = [items[index] for index in fresh]
    staged = spool.stage(chosen) if chosen else []
    kept = False
    try:
        with ledger.locked():
            try:
                # Another copy may have landed (or been repaired) since the first look.
                late = []
                for position, (envelope, _) in enumerate(chosen):
                    repeat, seen = _repeat_of(ledger, envelope)
                    if seen and len(seen) < len(envelope.recipients):
                        raise RepeatInFlightError(
                            "another copy of some of these recipients was spooled meanwhile; "
                            "send again to be told which")
                    if repeat is not None:
                        late.append(position)
                        answers[fresh[position]] = (repeat, True)
                spool.discard([staged[position] for position in late])
                fresh = [index for position, index in enumerate(fresh) if position not in late]
                staged = [item for position, item in enumerate(staged) if position not in late]
                chosen = [item for position, item in enumerate(chosen) if position not in late]
                spool.commit(staged)
                ledger.record([(key, envelope.id) for envelope, _ in chosen
                               for key in envelope_keys(envelope)])
                kept = True
            finally:
                if not kept:
                    spool.discard(staged)  # under the lock: no half-recorded message stays
    finally:
        if not kept:
            spool.discard(staged)
    spool.announce(chosen)
    for index, (envelope, _) in zip(fresh, chosen, strict=True):
        answers[index] = (envelope.id, False)
    return [answer for answer in answers if answer is not None]


def repair_spool(root: Path | str) -> int:
    """Close gaps a crash left in a spool's record (at intake start); return how many."""
    ledger = SpoolLedger(Spool(root))
    with ledger.locked():
        return ledger.repair()
