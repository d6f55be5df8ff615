"""Parse a segment definition (JSON) into a checked condition tree.

Every part is checked against a closed vocabulary (fields, operators, value
types, depth and size), and an error names the exact place that is wrong,
e.g. ``definition.all[1].op``. Nothing a tenant writes is passed on as SQL:
the compiler (``segments.compiler``) only ever sees these dataclasses.

Shapes::

    {"all": [C, ...]}  {"any": [C, ...]}  {"not": C}
    {"field": "email" | "name" | "status" | "created_at", "op": OP, "value": V}
    {"attribute": "plan", "op": OP, "value": V}
    {"list": "<list id>", "status": "confirmed" | "unconfirmed" | "unsubscribed" | "any"}
    {"event": "opened" | "clicked" | "bounced" | "delivered" | "complained",
     "campaign_id": "<campaign id>", "within_days": N, "human_only": true}

OP is eq, neq, in, contains, exists, lt, lte, gt, gte, before, after or
within_days (``created_at`` within the last N days: "added within N days").
"Never opened" is ``{"not": {"event": "opened"}}``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import uuid
from typing import Any

from swiftmail_core.errors import ValidationError

MAX_DEPTH = 8
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_TEXT = 500
MAX_DAYS = 36500
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")

CONTACT_FIELDS = {
    "email": ("eq", "neq", "in", "contains"),
    "name": ("eq", "neq", "in", "contains", "exists"),
    "status": ("eq", "neq", "in"),
    "created_at": ("before", "after", "within_days"),
}
ATTRIBUTE_OPS = ("eq", "neq", "in", "contains", "exists", "lt", "lte", "gt", "gte",
                 "before", "after")
CONTACT_STATUSES = ("active", "unsubscribed", "bounced", "complained", "blocklisted")
SUBSCRIPTION_STATUSES = ("confirmed", "unconfirmed", "unsubscribed", "any")
EVENTS = ("opened", "clicked", "bounced", "delivered", "complained", "unsubscribed")


@dataclasses.dataclass(frozen=True)
class Combine:
    """All (and) or any (or) of the parts."""

    mode: str
    parts: tuple[Condition, ...]


@dataclasses.dataclass(frozen=True)
class Negate:
    """The contacts the part does not match."""

    part: Condition


@dataclasses.dataclass(frozen=True)
class FieldTest:
    """A test on a contact column or a JSONB attribute (``attribute`` set)."""

    name: str
    op: str
    value: Any
    attribute: bool = False


@dataclasses.dataclass(frozen=True)
class ListMembership:
    """Subscribed to a list, with a given subscription status."""

    list_id: uuid.UUID
    status: str


@dataclasses.dataclass(frozen=True)
class EventTest:
    """Had an event (opened, clicked...) of any or one campaign, optionally recently."""

    type: str
    campaign_id: uuid.UUID | None
    within_days: int | None
    human_only: bool


Condition = Combine | Negate | FieldTest | ListMembership | EventTest


def parse_definition(raw: Any) -> Condition:
    """Return the checked condition tree, or raise ValidationError naming the bad part."""
    counter = [0]
    return _parse(raw, "definition", 1, counter)


def _fail(path: str, message: str) -> ValidationError:
    return ValidationError(f"invalid segment: {path} {message}",
                           errors=[{"field": path, "message": message}])


def _parse(raw: Any, path: str, depth: int, counter: list[int]) -> Condition:
    if depth > MAX_DEPTH:
        raise _fail(path, f"nests deeper than {MAX_DEPTH} levels")
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise _fail(path, f"makes the segment longer than {MAX_CONDITIONS} conditions")
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "must be a JSON object such as {\"all\": [...]} or {\"field\": ...}")
    kinds = [key for key in ("all", "any", "not", "field", "attribute", "list", "event")
             if key in raw]
    if len(kinds) != 1:
        raise _fail(path, "must have exactly one of all, any, not, field, attribute, list, event")
    kind = kinds[0]
    if kind in ("all", "any"):
        _only(raw, path, {kind})
        parts = raw[kind]
        if not isinstance(parts, list) or not parts:
            raise _fail(f"{path}.{kind}", "must be a non-empty array of conditions")
        return Combine(kind, tuple(_parse(part, f"{path}.{kind}[{index}]", depth + 1, counter)
                                   for index, part in enumerate(parts)))
    if kind == "not":
        _only(raw, path, {"not"})
        return Negate(_parse(raw["not"], f"{path}.not", depth + 1, counter))
    if kind == "list":
        _only(raw, path, {"list", "status"})
        status = raw.get("status", "confirmed")
        if status not in SUBSCRIPTION_STATUSES:
            raise _fail(f"{path}.status", f"must be one of {', '.join(SUBSCRIPTION_STATUSES)}")
        return ListMembership(_uuid(raw["list"], f"{path}.list"), status)
    if kind == "event":
        return _event(raw, path)
    return _field_test(raw, path, attribute=kind == "attribute")


def _only(raw: dict[str, Any], path: str, allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", f"is not allowed here (allowed: {', '.join(sorted(allowed))})")


def _uuid(value: Any, path: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise _fail(path, "must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _fail(path, "must be a UUID") from None


def _days(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise _fail(path, f"must be a whole number of days from 1 to {MAX_DAYS}")
    return value


def _event(raw: dict[str, Any], path: str) -> EventTest:
    _only(raw, path, {"event", "campaign_id", "within_days", "human_only"})
    if raw["event"] not in EVENTS:
        raise _fail(f"{path}.event", f"must be one of {', '.join(EVENTS)}")
    campaign = raw.get("campaign_id")
    within = raw.get("within_days")
    human_only = raw.get("human_only", False)
    if not isinstance(human_only, bool):
        raise _fail(f"{path}.human_only", "must be true or false")
    return EventTest(raw["event"],
                     _uuid(campaign, f"{path}.campaign_id") if campaign is not None else None,
                     _days(within, f"{path}.within_days") if within is not None else None,
                     human_only)


def _field_test(raw: dict[str, Any], path: str, *, attribute: bool) -> FieldTest:
    key = "attribute" if attribute else "field"
    _only(raw, path, {key, "op", "value"})
    name = raw[key]
    if attribute:
        if not isinstance(name, str) or not ATTRIBUTE_KEY.match(name):
            raise _fail(f"{path}.attribute", "must be 1-100 letters, digits, '_', '.' or '-'")
        allowed: tuple[str, ...] = ATTRIBUTE_OPS
    else:
        if not isinstance(name, str) or name not in CONTACT_FIELDS:
            raise _fail(f"{path}.field", f"must be one of {', '.join(CONTACT_FIELDS)} "
                        "(use \"attribute\" for custom data)")
        allowed = CONTACT_FIELDS[name]
    op = raw.get("op")
    if op not in allowed:
        raise _fail(f"{path}.op", f"must be one of {', '.join(allowed)} for {name!r}")
    if op == "exists":
        if "value" in raw:
            raise _fail(f"{path}.value", "is not used with exists")
        return FieldTest(name, op, None, attribute)
    if "value" not in raw:
        raise _fail(f"{path}.value", "is required")
    return FieldTest(name, op, _value(raw["value"], op, name, attribute, f"{path}.value"),
                     attribute)


def _scalar(value: Any, path: str, *, attribute: bool) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_TEXT or "\x00" in value:
            raise _fail(path, f"must be text of at most {MAX_TEXT} characters without NUL")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(path, "must be text (it has a lone surrogate)") from None
        return value
    if attribute and isinstance(value, bool):
        return value
    if attribute and isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise _fail(path, "must be a finite number of at most 1e15")
        return value
    raise _fail(path, "must be a string" + (", number or boolean" if attribute else ""))


def _value(value: Any, op: str, name: str, attribute: bool, path: str) -> Any:
    if op == "within_days":
        return _days(value, path)
    if op in ("before", "after"):
        if not isinstance(value, str) or not ISO_DATE.match(value):
            raise _fail(path, "must be an ISO 8601 date such as 2030-01-31")
        try:
            datetime.date.fromisoformat(value[:10])
        except ValueError:
            raise _fail(path, "is not a real date") from None
        return value
    if op in ("lt", "lte", "gt", "gte"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "must be a number")
        return _scalar(value, path, attribute=True)
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise _fail(path, f"must be an array of 1 to {MAX_IN_VALUES} values")
        values = [_scalar(item, f"{path}[{index}]", attribute=attribute)
                  for index, item in enumerate(value)]
        if name == "status" and not attribute:
            _statuses(values, path)
        return tuple(values)
    if op == "contains" and not isinstance(value, str):
        raise _fail(path, "must be a string")
    checked = _scalar(value, path, attribute=attribute)
    if name == "status" and not attribute:
        _statuses([checked], path)
    return checked


def _statuses(values: list[Any], path: str) -> None:
    for value in values:
        if value not in CONTACT_STATUSES:
            raise _fail(path, f"must be one of {', '.join(CONTACT_STATUSES)}")
