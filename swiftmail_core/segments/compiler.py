"""Compile a checked condition tree into one parameterised SQL condition.

The SQL text comes only from this module's fixed fragments and the closed
vocabulary of ``segments.definition``; every value a tenant wrote (attribute
keys included) is a bound ``%s`` parameter. The condition names its tenant
explicitly on top of row-level security, so PostgreSQL uses the
tenant-leading indexes and Citus routes it to one shard; the subqueries on
subscriptions and events carry the tenant too.

Attribute comparisons never cast a tenant's data in a way that can fail:
numbers compare only where the JSON value is a number (a CASE, since SQL does
not promise to evaluate AND left to right), dates compare as ISO 8601 text
(``YYYY-MM-DD`` sorts like the dates it names).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from swiftmail_core.segments.definition import (
    Combine,
    Condition,
    EventTest,
    FieldTest,
    ListMembership,
    Negate,
)

_COMPARE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_COLUMNS = {"email": "email_lower", "name": "name", "status": "status",
            "created_at": "created_at"}
_ALIAS = re.compile(r"^[a-z][a-z0-9_]{0,20}$")


@dataclasses.dataclass(frozen=True)
class CompiledSegment:
    """A condition over ``contacts`` (under ``alias``) and its positional parameters."""

    sql: str
    params: tuple[Any, ...]


class _Compiler:
    def __init__(self, tenant_id: str, alias: str) -> None:
        self.tenant_id = tenant_id
        self.c = alias
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "%s"

    def condition(self, node: Condition) -> str:
        if isinstance(node, Combine):
            joiner = " AND " if node.mode == "all" else " OR "
            return "(" + joiner.join(self.condition(part) for part in node.parts) + ")"
        if isinstance(node, Negate):
            return f"(NOT {self.condition(node.part)})"
        if isinstance(node, ListMembership):
            sql = (f"EXISTS (SELECT 1 FROM subscriptions s WHERE s.tenant_id = {self.c}.tenant_id"
                   f" AND s.contact_id = {self.c}.id AND s.list_id = "
                   f"{self.bind(str(node.list_id))}::uuid")
            if node.status != "any":
                sql += f" AND s.status = {self.bind(node.status)}"
            return sql + ")"
        if isinstance(node, EventTest):
            return self.event(node)
        if node.attribute:
            # A missing or mistyped attribute is false, never unknown: NOT must flip it.
            return f"coalesce({self.attribute(node)}, false)"
        return self.column(node)

    def event(self, node: EventTest) -> str:
        sql = (f"EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = {self.c}.tenant_id "
               f"AND e.contact_id = {self.c}.id AND e.type = {self.bind(node.type)}")
        if node.campaign_id is not None:
            sql += f" AND e.campaign_id = {self.bind(str(node.campaign_id))}::uuid"
        if node.within_days is not None:
            sql += f" AND e.occurred_at >= now() - make_interval(days => {self.bind(node.within_days)})"
        if node.human_only:
            sql += " AND NOT e.is_machine"
        return sql + ")"

    def column(self, node: FieldTest) -> str:
        column = f"{self.c}.{_COLUMNS[node.name]}"
        value = node.value
        if node.name == "email":
            value = tuple(v.lower() for v in value) if node.op == "in" else value.lower()
        if node.op == "exists":
            return f"({column} <> '')"
        if node.op == "within_days":
            return f"({column} >= now() - make_interval(days => {self.bind(value)}))"
        if node.op in ("before", "after"):
            sign = "<" if node.op == "before" else ">="
            return f"({column} {sign} {self.bind(value)}::timestamptz)"
        if node.op == "in":
            return f"({column} = ANY({self.bind(list(value))}::text[]))"
        if node.op == "contains":
            return f"(strpos(lower({column}), lower({self.bind(value)})) > 0)"
        return f"({column} {'=' if node.op == 'eq' else '<>'} {self.bind(value)})"

    def attribute(self, node: FieldTest) -> str:
        attributes = f"{self.c}.attributes"
        if node.op == "exists":
            return f"({attributes} ? {self.bind(node.name)})"
        if node.op in ("eq", "neq"):
            match = (f"{attributes} @> jsonb_build_object({self.bind(node.name)}::text, "
                     f"{self.json(node.value)})")
            return f"({match})" if node.op == "eq" else f"(NOT {match})"
        if node.op == "in":
            return (f"({attributes} -> {self.bind(node.name)} = ANY(ARRAY(SELECT "
                    f"jsonb_array_elements({self.json(list(node.value))}))))")
        if node.op == "contains":
            return (f"(CASE WHEN jsonb_typeof({attributes} -> {self.bind(node.name)}) = 'string' "
                    f"THEN strpos(lower({attributes} ->> {self.bind(node.name)}), "
                    f"lower({self.bind(node.value)})) > 0 END)")
        if node.op in _COMPARE:
            return (f"(CASE WHEN jsonb_typeof({attributes} -> {self.bind(node.name)}) = 'number' "
                    f"THEN ({attributes} ->> {self.bind(node.name)})::numeric END "
                    f"{_COMPARE[node.op]} {self.bind(node.value)}::numeric)")
        sign = "<" if node.op == "before" else ">="
        return (f"(CASE WHEN ({attributes} ->> {self.bind(node.name)}) "
                f"~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' "
                f"THEN left({attributes} ->> {self.bind(node.name)}, 10) END "
                f"{sign} {self.bind(node.value[:10])})")

    def json(self, value: Any) -> str:
        return f"{self.bind(json.dumps(value))}::jsonb"


def compile_segment(tenant_id: Any, condition: Condition, alias: str = "c") -> CompiledSegment:
    """Return the SQL condition selecting ``condition``'s contacts of ``tenant_id``.

    ``alias`` is how the surrounding query names ``contacts`` (peewee: ``t1``).
    """
    if not _ALIAS.match(alias):
        raise ValueError(f"bad table alias {alias!r}")
    compiler = _Compiler(str(tenant_id), alias)
    tenant = f"{alias}.tenant_id = {compiler.bind(str(tenant_id))}::uuid"
    body = compiler.condition(condition)
    return CompiledSegment(f"({tenant} AND {body})", tuple(compiler.params))
