"""Moving the spool of a relay host that will not return into a live relay's spool.

``reinject`` takes the old spool's delivery lock first (so no relay
delivers from it meanwhile, and a relay started there later waits), copies
the old spool's record of the ledger rows it took (``spool_ledger``) into
the target's, so that workers resending to the target mail whose hand-off
answer the dead relay lost are told "already have it". Then, batch by
batch, it writes each queued message durably into the target spool (the
envelope with its per-recipient progress, under the same queue id, marked
``moved_from``, recorded as moved) and only after that removes it from the
old spool. A crash in between leaves a message in both spools, never in
neither; a second run finds the target's copy (queued, held, or recorded
as moved in and since finished) and only removes the old one: the target's
newer progress is never overwritten. Recipients already final are not sent
again; a message whose recipients are all final is only removed. Held
messages stay in ``hold/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from swiftmail_relay.spool import Spool, _fsync_dir
from swiftmail_relay.spool_ledger import SpoolLedger, write_once
from swiftmail_relay.spool_lock import SpoolLock

from swiftmail_core.errors import ValidationError

BATCH = 200


@dataclasses.dataclass
class ReinjectReport:
    """What a reinject did."""

    moved: int = 0
    finished: int = 0
    already_there: int = 0  # the target had it from an earlier, interrupted run
    records: int = 0  # ledger records copied into the target
    held: int = 0
    unreadable: list[str] = dataclasses.field(default_factory=list)


def reinject(source_dir: Path | str, target: Spool, *,
             progress: Callable[[int], None] | None = None) -> ReinjectReport:
    """Move every queued message of ``source_dir`` into ``target``; see the module doc.

    Raises ConfigurationError when a relay delivers from ``source_dir`` and
    ValidationError when it is not a spool or is the target itself.
    """
    root = Path(source_dir)
    if not (root / "queue").is_dir():
        raise ValidationError.for_field("spool_dir", f"{root} is not a relay spool (no queue/)")
    if root.resolve() == target.root.resolve():
        raise ValidationError.for_field(
            "spool_dir", f"{root} is this relay's own spool: give the other host's spool")
    lock = SpoolLock(root).acquire()
    try:
        source = Spool(root)
        report = ReinjectReport(held=sum(1 for _ in source.scan(source.hold)))
        target_ledger = SpoolLedger(target)
        with target_ledger.locked():
            report.records = target_ledger.copy_from(SpoolLedger(source))
        ids = sorted(source.scan())
        for start in range(0, len(ids), BATCH):
            _move_batch(source, target, ids[start:start + BATCH], report)
            if progress is not None:
                progress(len(ids[start:start + BATCH]))
        return report
    finally:
        lock.release()


def _move_batch(source: Spool, target: Spool, ids: list[str], report: ReinjectReport) -> None:
    items = []
    done = []
    for queue_id in ids:
        try:
            envelope, raw = source.read(queue_id)
        except (OSError, ValueError) as ex:
            report.unreadable.append(f"{queue_id}: {ex}")
            continue
        done.append(queue_id)
        if envelope.pending:
            envelope.moved_from = envelope.moved_from or str(source.root)
            items.append((envelope, raw))
        else:
            report.finished += 1
    if items:
        # Durable in the target before anything leaves the source.
        answers = write_once(target, items)
        report.already_there += sum(1 for _, repeat in answers if repeat)
        report.moved += sum(1 for _, repeat in answers if not repeat)
    for queue_id in done:
        source.remove(queue_id)
    _fsync_dir(source.queue)
