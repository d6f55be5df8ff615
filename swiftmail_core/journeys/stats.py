"""Per-journey numbers: entered, where contacts are, and what each step did."""

from __future__ import annotations

import uuid
from typing import Any

_STEPS_SQL = """
SELECT r.version, r.step, r.step_id, r.outcome, count(*),
       count(DISTINCT e.message_id) FILTER (WHERE e.type = 'opened' AND NOT e.is_machine),
       count(DISTINCT e.message_id) FILTER (WHERE e.type = 'clicked' AND NOT e.is_machine)
FROM journey_step_runs r
LEFT JOIN events e ON e.tenant_id = r.tenant_id AND e.message_id = r.message_id
                  AND r.message_id IS NOT NULL AND e.type IN ('opened', 'clicked')
WHERE r.tenant_id = %s AND r.journey_id = %s
GROUP BY r.version, r.step, r.step_id, r.outcome
ORDER BY r.version, r.step, r.outcome
"""

#: Emails whose contact named an unknown time zone (they got the tenant's).
_FALLBACKS_SQL = """
SELECT r.version, r.step, count(*)
FROM journey_step_runs r
JOIN messages m ON m.tenant_id = r.tenant_id AND m.id = r.message_id
WHERE r.tenant_id = %s AND r.journey_id = %s AND r.message_id IS NOT NULL
  AND m.payload ? 'timezone_fallback'
GROUP BY r.version, r.step
"""


def journey_stats(database: Any, tenant_id: uuid.UUID | str,
                  journey_id: uuid.UUID | str) -> dict[str, Any]:
    """Return entered/active/completed/exited counts and per-step runs (in ``tenant_tx``).

    A step's ``ran`` counts contacts that passed it; ``outcomes`` splits a
    branch (then/else) or a list step; emails add human ``opened`` and
    ``clicked`` (distinct messages).
    """
    tenant, journey = str(tenant_id), str(journey_id)
    by_status = dict(database.execute_sql(
        "SELECT status, count(*) FROM journey_enrollments WHERE tenant_id = %s "
        "AND journey_id = %s GROUP BY status", (tenant, journey)).fetchall())
    reasons = dict(database.execute_sql(
        "SELECT exit_reason, count(*) FROM journey_enrollments WHERE tenant_id = %s "
        "AND journey_id = %s AND status = 'exited' GROUP BY exit_reason",
        (tenant, journey)).fetchall())
    steps: dict[tuple[int, int], dict[str, Any]] = {}
    for version, step, step_id, outcome, ran, opened, clicked in database.execute_sql(
            _STEPS_SQL, (tenant, journey)).fetchall():
        entry = steps.setdefault((version, step), {
            "version": version, "position": step, "step_id": step_id, "ran": 0,
            "outcomes": {}, "opened": 0, "clicked": 0, "timezone_fallbacks": 0})
        entry["ran"] += ran
        entry["outcomes"][outcome] = ran
        entry["opened"] += opened
        entry["clicked"] += clicked
    for version, step, count in database.execute_sql(_FALLBACKS_SQL, (tenant, journey)):
        if (version, step) in steps:
            steps[(version, step)]["timezone_fallbacks"] = count
    return {
        "entered": sum(by_status.values()),
        "active": by_status.get("active", 0),
        "completed": by_status.get("completed", 0),
        "exited": by_status.get("exited", 0),
        "exit_reasons": {str(reason): count for reason, count in reasons.items()},
        "steps": list(steps.values()),
    }
