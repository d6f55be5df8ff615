"""The winner of an A/B test, and the rest of the audience sent with it.

``decide`` is the one place a winner is recorded: ONE conditional UPDATE of
the campaign (``ab_decided_at IS NULL``, campaign sending or paused) takes the
decision, and in the same transaction the first ``RELEASE_BATCH`` waiting
rows get the winner's variant and join the queue (``held`` instead while the
campaign is paused, so resuming sends them). Whoever loses a race (two ticks,
a tick and a person, two people) changes nothing, so no row ever gets two
variants and none is queued twice. The tick releases the rest in batches of
their own transactions (``release_decided``), each taking the winner from the
campaign row under a share lock, so a long release never holds the campaign
(pause and cancel wait for one batch at most) and a crash between batches
only leaves rows for the next tick. Rows leave ``waiting`` only here or by a
cancel.

The periodic tick (``decide_due_tests``, run once cluster-wide) decides the
tests whose ``decide_after_seconds`` have passed since the audience was
resolved and whose test messages have all been handed over (a throttled
test is not judged on the part that went out), by unique human opens or
clicks per delivered message; a paused campaign is decided after it
resumes; a ``manual`` test waits for ``choose_winner``.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from swiftmail_core.ab_tests.stats import variant_counts
from swiftmail_core.ab_tests.variants import load_variants
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.sending import due_tenants, state

log = logging.getLogger(__name__)
#: Waiting rows moved to the queue per transaction.
RELEASE_BATCH = 50_000
#: Batches one tick releases at most (the next tick goes on).
RELEASE_BATCHES_PER_TICK = 40
#: Which count each automatic metric compares (per delivered message).
METRIC_COUNTS = {"opens": "opens", "clicks": "clicks"}

_DECIDE_SQL = """
UPDATE campaigns SET ab_winner = %s, ab_decided_at = now(), ab_decided_by = %s,
       ab_decided_on = %s::jsonb
WHERE tenant_id = %s AND id = %s AND ab_metric IS NOT NULL AND ab_decided_at IS NULL
  AND status IN ('sending', 'paused') AND audience_resolved_at IS NOT NULL
RETURNING status
"""
_DECIDED_SQL = """
/* cross-tenant */ SELECT c.tenant_id, c.id FROM campaigns c
WHERE c.ab_winner IS NOT NULL AND c.status IN ('sending', 'paused')
  AND EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = c.tenant_id
              AND m.campaign_id = c.id AND m.status = 'waiting')
ORDER BY c.ab_decided_at
"""
#: Tests whose time has come and whose test messages have all been handed over
#: (none queued or being sent; a deferred one does not hold the decision up).
#: Test messages are the rows with a variant (the rest wait without one):
#: ``variant IS NOT NULL`` matches the partial index messages_ab_unsent_idx (0192).
_DUE_SQL = """
/* cross-tenant */ SELECT c.tenant_id, c.id, c.ab_metric FROM campaigns c
WHERE c.status = 'sending' AND c.ab_metric IN ('opens', 'clicks') AND c.ab_decided_at IS NULL
  AND c.audience_resolved_at IS NOT NULL
  AND c.audience_resolved_at + make_interval(secs => c.ab_decide_after_seconds) <= now()
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = c.tenant_id
                  AND m.campaign_id = c.id AND m.status IN ('queued', 'sending')
                  AND m.variant IS NOT NULL)
ORDER BY c.audience_resolved_at
"""


def decide(database: Any, tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str,
           winner: str, decided_by: str, *, limit: int = RELEASE_BATCH,
           counts: dict[str, dict[str, int]] | None = None) -> int | None:
    """Record ``winner`` and release up to ``limit`` waiting rows; None if already decided.

    ``counts`` (each variant's results now; read here when not given) are
    kept with the decision. Returns how many waiting rows were released.
    Runs in the caller's transaction (tenant or system role).
    """
    if counts is None:
        counts = variant_counts(database, tenant_id, campaign_id)
    row = database.execute_sql(
        _DECIDE_SQL, (winner, decided_by, json.dumps(counts), str(tenant_id),
                      str(campaign_id))).fetchone()
    if row is None:
        return None
    return _release(database, tenant_id, campaign_id, winner, row[0], limit)


def _release(database: Any, tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str,
             winner: str, campaign_status: str, limit: int) -> int:
    status = "held" if campaign_status == "paused" else "queued"
    (local,) = database.execute_sql(
        "SELECT local_send_time FROM campaigns WHERE tenant_id = %s AND id = %s",
        (str(tenant_id), str(campaign_id))).fetchone()
    released = state.release_waiting(database, tenant_id, campaign_id, winner, status, local,
                                     limit)
    if released and status == "queued":
        due_tenants.mark_due(database, tenant_id)  # claims start from the due tenants
    return released


def release_batch(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str,
                  limit: int = RELEASE_BATCH) -> int:
    """Release up to ``limit`` more waiting rows of a decided test; return how many.

    The winner and the campaign's state are read under a share lock of the
    campaign row, so a pause or cancel waits for this batch and the next
    batch sees it (a cancelled campaign's rows are the cancel's to end).
    """
    with system_tx() as database:
        row = database.execute_sql(
            "SELECT ab_winner, status FROM campaigns WHERE tenant_id = %s AND id = %s "
            "FOR SHARE", (str(tenant_id), str(campaign_id))).fetchone()
        if row is None or row[0] is None or row[1] not in ("sending", "paused"):
            return 0
        return _release(database, tenant_id, campaign_id, row[0], row[1], limit)


def release_decided(max_batches: int = RELEASE_BATCHES_PER_TICK,
                    batch_size: int = RELEASE_BATCH) -> int:
    """Release waiting rows of decided tests, batch by batch; return how many."""
    with system_tx() as database:
        campaigns = database.execute_sql(_DECIDED_SQL).fetchall()
    released, batches = 0, 0
    for tenant_id, campaign_id in campaigns:
        while batches < max_batches:
            batches += 1
            moved = release_batch(tenant_id, campaign_id, batch_size)
            released += moved
            if moved < batch_size:
                break
    return released


def pick_winner(counts: dict[str, dict[str, int]], variants: list[str], metric: str) -> str:
    """Return the variant with the best rate of ``metric``; ties go to the earlier key."""
    measure = METRIC_COUNTS[metric]

    def score(key: str) -> tuple[float, int]:
        found = counts.get(key) or {"delivered": 0, measure: 0}
        delivered = found["delivered"]
        return (found[measure] / delivered if delivered else 0.0, -variants.index(key))

    return max(variants, key=score)


def decide_due_tests() -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """Decide every test whose time has come; return (tenant, campaign, winner) decided."""
    with system_tx() as database:
        due = database.execute_sql(_DUE_SQL).fetchall()
    decided = []
    for tenant_id, campaign_id, metric in due:
        try:
            with system_tx() as database:
                variants = sorted(load_variants(database, tenant_id, campaign_id))
                if not variants:
                    continue
                counts = variant_counts(database, tenant_id, campaign_id)
                winner = pick_winner(counts, variants, metric)
                released = decide(database, tenant_id, campaign_id, winner, metric,
                                  counts=counts)
        except Exception:
            log.exception("deciding the A/B test of campaign %s failed; the next tick retries",
                          campaign_id)
            continue
        if released is not None:
            log.info("A/B test of campaign %s decided by %s: %s wins, %d rows queued",
                     campaign_id, metric, winner, released)
            decided.append((_uuid(tenant_id), _uuid(campaign_id), winner))
    return decided


def choose_winner(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID, variant: str) -> int:
    """Pick the winner by hand; return how many waiting rows it released.

    Up to ``RELEASE_BATCH`` rows go with the decision; the tick releases the rest.

    Raises ValidationError (naming ``variant``) for a variant the campaign
    lacks and ConflictError when the test is decided already or the
    campaign is not sending or paused.
    """
    with tenant_tx(tenant_id) as database:
        found = database.execute_sql(
            "SELECT status, ab_metric, ab_winner, audience_resolved_at FROM campaigns "
            "WHERE tenant_id = %s AND id = %s FOR UPDATE",
            (str(tenant_id), str(campaign_id))).fetchone()
        if found is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        status, metric, winner, resolved_at = found
        if metric is None:
            raise NotFoundError(f"campaign {campaign_id} has no A/B test")
        variants = load_variants(database, tenant_id, campaign_id)
        if variant not in variants:
            raise ValidationError.for_field(
                "variant", f"no variant {variant!r}; this test has {', '.join(sorted(variants))}")
        if winner is not None:
            raise ConflictError(f"the A/B test is decided already: {winner} won")
        if status not in ("sending", "paused") or resolved_at is None:
            raise ConflictError(f"campaign is {status}; a winner can be chosen once its test "
                                "is being sent (sending or paused)")
        released = decide(database, tenant_id, campaign_id, variant, "manual")
        if released is None:  # pragma: no cover - the row lock above makes this unreachable
            raise ConflictError("the A/B test was decided meanwhile")
        return released


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
