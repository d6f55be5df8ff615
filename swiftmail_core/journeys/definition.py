"""Parse a journey's trigger and steps (JSON) into checked dataclasses.

Every part is checked against a closed vocabulary, and an error names the
exact place that is wrong, e.g. ``steps[2].seconds``. Shapes::

    trigger: {"type": "list_subscribed", "list_id": "<list id>"}
             {"type": "event", "name": "trial_started"}
             {"type": "date_attribute", "attribute": "trial_end", "days_before": 3}
             {"type": "date_attribute", "attribute": "birthday", "yearly": true}
    steps:   [{"id": "welcome", "type": "send_email", "from_email": "a@b.example",
               "subject": "Hi {{ contact.name }}", "html": "...", "text": "...",
               "template_id": "<template id>", "from_name": "...", "reply_to": "...",
               "local_send_time": "09:00"},
              {"type": "wait", "seconds": 86400},
              {"type": "wait", "until": {"time": "09:00", "weekdays": ["mon", "tue"]}},
              {"type": "branch", "condition": <segment condition>,
               "then": "<step id>" | "exit" | "next", "else": ...},
              {"type": "branch", "previous_email": "opened" | "clicked", ...},
              {"type": "add_to_list" | "remove_from_list", "list_id": "<list id>"},
              {"type": "exit"}]

A step's ``id`` is optional (``step-<n>`` by default) and unique. A branch
may only jump forward, so every journey ends. ``wait until`` waits for the
next time of day (on one of the weekdays, any day if omitted) in the
contact's ``timezone`` attribute (an IANA name), else the tenant's
``timezone`` setting, else UTC; a ``send_email`` step's ``local_send_time``
holds its email until that time of day in the same zone
(``swiftmail_core.sending.send_time``).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

from swiftmail_core.errors import ValidationError
from swiftmail_core.segments.definition import Condition, parse_definition
from swiftmail_core.sending.send_time import parse_local_time

MAX_STEPS = 50
MAX_WAIT_SECONDS = 366 * 86400
MAX_TEXT = 200_000
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
STEP_TYPES = ("send_email", "wait", "branch", "add_to_list", "remove_from_list", "exit")
TRIGGER_TYPES = ("list_subscribed", "event", "date_attribute")
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
#: Jump targets a branch may name besides a later step's id.
EXIT, NEXT = "exit", "next"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
PREVIOUS_EMAIL = ("opened", "clicked")


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What enrolls a contact: ``key`` is the list id, event name or attribute."""

    type: str
    key: str
    days_before: int = 0
    yearly: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        if self.type == "list_subscribed":
            return {"type": self.type, "list_id": self.key}
        if self.type == "date_attribute":
            return {"type": self.type, "attribute": self.key, "days_before": self.days_before,
                    "yearly": self.yearly}
        return {"type": self.type, "name": self.key}


@dataclasses.dataclass(frozen=True)
class Step:
    """One checked step; ``options`` holds the type's own fields as written."""

    id: str
    type: str
    options: dict[str, Any]
    condition: Condition | None = None


def _fail(path: str, message: str) -> ValidationError:
    return ValidationError(f"invalid journey: {path} {message}",
                           errors=[{"field": path, "message": message}])


def parse_trigger(raw: Any, path: str = "trigger") -> Trigger:
    """Return the checked trigger, or raise ValidationError naming the bad part."""
    if not isinstance(raw, dict):
        raise _fail(path, "must be an object such as {\"type\": \"event\", \"name\": \"...\"}")
    kind = raw.get("type")
    if kind not in TRIGGER_TYPES:
        raise _fail(f"{path}.type", f"must be one of {', '.join(TRIGGER_TYPES)}")
    if kind == "list_subscribed":
        _only(raw, path, {"type", "list_id"})
        return Trigger(kind, str(_uuid(raw.get("list_id"), f"{path}.list_id")))
    if kind == "date_attribute":
        _only(raw, path, {"type", "attribute", "days_before", "yearly"})
        attribute = raw.get("attribute")
        if not isinstance(attribute, str) or not ATTRIBUTE_KEY.match(attribute):
            raise _fail(f"{path}.attribute", "must be 1-100 letters, digits or _ . -")
        days = raw.get("days_before", 0)
        if not isinstance(days, int) or isinstance(days, bool) or not -366 <= days <= 366:
            raise _fail(f"{path}.days_before", "must be an integer from -366 to 366")
        yearly = raw.get("yearly", False)
        if not isinstance(yearly, bool):
            raise _fail(f"{path}.yearly", "must be true or false")
        return Trigger(kind, attribute, days, yearly)
    _only(raw, path, {"type", "name"})
    name = raw.get("name")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise _fail(f"{path}.name", "must be 1-100 letters, digits or _ . : -")
    return Trigger(kind, name)


def parse_steps(raw: Any, path: str = "steps") -> tuple[Step, ...]:
    """Return the checked steps, or raise ValidationError naming the bad part."""
    if not isinstance(raw, list) or not raw:
        raise _fail(path, "must be a non-empty array of steps")
    if len(raw) > MAX_STEPS:
        raise _fail(path, f"must have at most {MAX_STEPS} steps")
    steps: list[Step] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be an object with a type")
        step_id = item.get("id", f"step-{index + 1}")
        if not isinstance(step_id, str) or not STEP_ID.match(step_id) or step_id in (EXIT, NEXT):
            raise _fail(f"{where}.id", "must be 1-60 letters, digits, _ or - (not exit/next)")
        if step_id in seen:
            raise _fail(f"{where}.id", f"repeats the id {step_id!r}")
        seen.add(step_id)
        steps.append(_step(item, where, step_id))
    order = {step.id: index for index, step in enumerate(steps)}
    for index, step in enumerate(steps):
        if step.type != "branch":
            continue
        for arm in ("then", "else"):
            target = step.options[arm]
            if target in (EXIT, NEXT):
                continue
            if target not in order:
                raise _fail(f"{path}[{index}].{arm}", f"names no step {target!r}")
            if order[target] <= index:
                raise _fail(f"{path}[{index}].{arm}", "must jump forward (a later step)")
    return tuple(steps)


def _step(raw: dict[str, Any], path: str, step_id: str) -> Step:
    kind = raw.get("type")
    if kind not in STEP_TYPES:
        raise _fail(f"{path}.type", f"must be one of {', '.join(STEP_TYPES)}")
    if kind == "wait" and "until" in raw:
        _only(raw, path, {"id", "type", "until"})
        return Step(step_id, kind, {"until": _until(raw["until"], f"{path}.until")})
    if kind == "wait":
        _only(raw, path, {"id", "type", "seconds"})
        seconds = raw.get("seconds")
        if (not isinstance(seconds, int) or isinstance(seconds, bool)
                or not 0 <= seconds <= MAX_WAIT_SECONDS):
            raise _fail(f"{path}.seconds", f"must be an integer from 0 to {MAX_WAIT_SECONDS}")
        return Step(step_id, kind, {"seconds": seconds})
    if kind == "send_email":
        return Step(step_id, kind, _email(raw, path))
    if kind == "branch":
        _only(raw, path, {"id", "type", "condition", "previous_email", "then", "else"})
        condition = None
        if ("condition" in raw) == ("previous_email" in raw):
            raise _fail(f"{path}.condition", "give a segment condition or previous_email")
        if "previous_email" in raw:
            if raw["previous_email"] not in PREVIOUS_EMAIL:
                raise _fail(f"{path}.previous_email", "must be opened or clicked")
            options: dict[str, Any] = {"previous_email": raw["previous_email"]}
        else:
            try:
                condition = parse_definition(raw["condition"])
            except ValidationError as ex:
                raise _relabel(ex, f"{path}.condition") from ex
            options = {"condition": raw["condition"]}
        for arm in ("then", "else"):
            target = raw.get(arm, NEXT)
            if not isinstance(target, str):
                raise _fail(f"{path}.{arm}", "must be a step id, \"next\" or \"exit\"")
            options[arm] = target
        return Step(step_id, kind, options, condition)
    if kind in ("add_to_list", "remove_from_list"):
        _only(raw, path, {"id", "type", "list_id"})
        return Step(step_id, kind, {"list_id": str(_uuid(raw.get("list_id"), f"{path}.list_id"))})
    _only(raw, path, {"id", "type"})
    return Step(step_id, kind, {})


def _until(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(path, "must be an object such as {\"time\": \"09:00\"}")
    _only(raw, path, {"time", "weekdays"})
    if not isinstance(raw.get("time"), str) or not TIME_OF_DAY.match(raw["time"]):
        raise _fail(f"{path}.time", "must be HH:MM (24-hour)")
    weekdays = raw.get("weekdays", list(WEEKDAYS))
    if (not isinstance(weekdays, list) or not weekdays
            or any(day not in WEEKDAYS for day in weekdays)):
        raise _fail(f"{path}.weekdays", f"must be a non-empty array of {', '.join(WEEKDAYS)}")
    return {"time": raw["time"], "weekdays": [day for day in WEEKDAYS if day in weekdays]}


def _email(raw: dict[str, Any], path: str) -> dict[str, Any]:
    fields = {"subject", "html", "text", "template_id", "from_email", "from_name", "reply_to"}
    _only(raw, path, {"id", "type", "local_send_time"} | fields)
    options: dict[str, Any] = {"local_send_time": raw.get("local_send_time")}
    if options["local_send_time"] is not None:
        try:
            parse_local_time(options["local_send_time"])
        except ValueError as ex:
            raise _fail(f"{path}.local_send_time", str(ex)) from ex
    for name in fields - {"template_id"}:
        value = raw.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise _fail(f"{path}.{name}", f"must be a string of at most {MAX_TEXT} characters")
        if name in ("subject", "from_email", "from_name", "reply_to") and any(
                ch in value for ch in "\r\n\0"):
            raise _fail(f"{path}.{name}", "must not contain CR, LF or NUL")
        options[name] = value
    if "template_id" in raw and raw["template_id"] is not None:
        options["template_id"] = str(_uuid(raw["template_id"], f"{path}.template_id"))
    else:
        options["template_id"] = None
        if not options["subject"]:
            raise _fail(f"{path}.subject", "give a subject, or a template_id")
        if not (options["html"] or options["text"]):
            raise _fail(f"{path}.html", "give html or text, or a template_id")
    if "@" not in options["from_email"]:
        raise _fail(f"{path}.from_email", "must be an email address")
    return options


def _relabel(ex: ValidationError, path: str) -> ValidationError:
    errors = [{**error, "field": path + str(error.get("field", ""))[len("definition"):]}
              for error in (ex.errors or [])]
    message = errors[0]["message"] if errors else str(ex)
    return ValidationError(f"invalid journey: {errors[0]['field'] if errors else path} {message}",
                           errors=errors or [{"field": path, "message": message}])


def _only(raw: dict[str, Any], path: str, allowed: set[str]) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _fail(f"{path}.{extra[0]}", "is not a known field here")


def _uuid(value: Any, path: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _fail(path, "must be an id (a UUID)")
