"""What a message's saved progress may say: a recipient is final once its outcome commits.

The spool's ``ID.state`` file is what the next relay believes after a crash
or a stop. A recipient written there as delivered (or bounced, or expired)
is never tried again, so its outcome would never be recorded if that
outcome was still waiting for the database when the relay died. Until the
outcome commits, the saved state shows such a recipient as pending and due
at once: the next relay delivers it again (the duplicate a crash between the
receiver's 250 and our write allows) and records it. In memory the
recipient stays final, so this relay never tries it twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from swiftmail_relay.outcomes import Outcome
from swiftmail_relay.spool import FINAL, PENDING, Envelope


class UnrecordedFinals:
    """Recipients of live messages whose final outcome is not committed yet."""

    def __init__(self) -> None:
        self._held: dict[str, set[int]] = {}  # queue id: indexes into its recipients

    def hold(self, envelope: Envelope, outcomes: Iterable[Outcome]) -> set[int]:
        """Hold the recipients ``outcomes`` made final; return their indexes."""
        final = {outcome.email for outcome in outcomes if outcome.type in FINAL}
        indexes = {index for index, recipient in enumerate(envelope.recipients)
                   if recipient.status in FINAL and recipient.address in final}
        if indexes:
            self._held.setdefault(envelope.id, set()).update(indexes)
        return indexes

    def release(self, queue_id: str, indexes: set[int]) -> None:
        """Their outcomes are committed: the saved state may show them final."""
        held = self._held.get(queue_id)
        if held is None:
            return
        held -= indexes
        if not held:
            del self._held[queue_id]

    def forget(self, queue_id: str) -> None:
        """The message finished: its state is never saved again."""
        self._held.pop(queue_id, None)

    def state(self, envelope: Envelope) -> bytes:
        """Return the envelope as its state file should hold it (``Envelope.to_json``)."""
        held = self._held.get(envelope.id)
        if not held:
            return envelope.to_json()
        recipients = [
            dataclasses.replace(recipient, status=PENDING, next_attempt_at=0.0)
            if index in held else recipient
            for index, recipient in enumerate(envelope.recipients)
        ]
        return dataclasses.replace(envelope, recipients=recipients).to_json()
