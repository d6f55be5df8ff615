"""Create journeys and their versions (call inside ``tenant_tx``).

A version's steps never change once written: editing the steps writes the
next version and points the journey at it; contacts already in the journey
finish on the version they entered with.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from swiftmail_core.errors import ValidationError
from swiftmail_core.journeys.definition import Step, Trigger, parse_steps, parse_trigger


def create_journey(database: Any, tenant_id: uuid.UUID | str, *, name: str, trigger: Any,
                   steps: Any, journey_id: uuid.UUID | None = None) -> uuid.UUID:
    """Insert a draft journey with version 1 of ``steps``; return its id."""
    checked: Trigger = parse_trigger(trigger)
    check_references(database, tenant_id, parse_steps(steps), checked)
    journey_id = journey_id or uuid.uuid4()
    database.execute_sql(
        "INSERT INTO journeys (tenant_id, id, name, trigger_type, trigger_key, "
        "trigger_days_before, trigger_yearly) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (str(tenant_id), str(journey_id), name, checked.type, checked.key, checked.days_before,
         checked.yearly))
    _insert_version(database, tenant_id, journey_id, 1, steps)
    return journey_id


def add_version(database: Any, tenant_id: uuid.UUID | str, journey_id: uuid.UUID | str,
                steps: Any) -> int:
    """Write the next version of the steps and make it current; return its number."""
    check_references(database, tenant_id, parse_steps(steps))
    (version,) = database.execute_sql(
        "UPDATE journeys SET current_version = current_version + 1, updated_at = now() "
        "WHERE tenant_id = %s AND id = %s RETURNING current_version",
        (str(tenant_id), str(journey_id))).fetchone()
    _insert_version(database, tenant_id, journey_id, int(version), steps)
    return int(version)


def check_references(database: Any, tenant_id: uuid.UUID | str, steps: tuple[Step, ...],
                     trigger: Trigger | None = None) -> None:
    """Raise ValidationError naming a list or template that is not the tenant's.

    APPSEC: ids are looked up with the tenant named (and under row-level
    security), so another tenant's list or template is "no such list".
    """
    wanted: list[tuple[str, str, str]] = []
    if trigger is not None and trigger.type == "list_subscribed":
        wanted.append(("trigger.list_id", "lists", trigger.key))
    for index, step in enumerate(steps):
        if step.options.get("list_id"):
            wanted.append((f"steps[{index}].list_id", "lists", step.options["list_id"]))
        if step.options.get("template_id"):
            wanted.append((f"steps[{index}].template_id", "templates",
                           step.options["template_id"]))
    for path, table, ident in wanted:
        # NOTE: table is one of the two literals above.
        found = database.execute_sql(f"SELECT 1 FROM {table} WHERE tenant_id = %s AND id = %s",
                                     (str(tenant_id), ident)).fetchone()
        if not found:
            raise ValidationError.for_field(path, f"no such {table[:-1]}")


def current_steps(database: Any, tenant_id: uuid.UUID | str,
                  journey_id: uuid.UUID | str) -> list[Any]:
    """Return the steps (as written) of the journey's current version."""
    (definition,) = database.execute_sql(
        "SELECT v.definition FROM journeys j JOIN journey_versions v "
        "ON v.tenant_id = j.tenant_id AND v.journey_id = j.id AND v.version = j.current_version "
        "WHERE j.tenant_id = %s AND j.id = %s", (str(tenant_id), str(journey_id))).fetchone()
    return list(definition["steps"])


def _insert_version(database: Any, tenant_id: uuid.UUID | str, journey_id: uuid.UUID | str,
                    version: int, steps: Any) -> None:
    database.execute_sql(
        "INSERT INTO journey_versions (tenant_id, journey_id, version, definition) "
        "VALUES (%s, %s, %s, %s::jsonb)",
        (str(tenant_id), str(journey_id), version, json.dumps({"steps": steps})))
