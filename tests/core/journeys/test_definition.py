"""Journey definitions: checked against a closed vocabulary, errors name the path."""

from __future__ import annotations

import pytest

from swiftmail_core.errors import ValidationError
from swiftmail_core.journeys.definition import parse_steps, parse_trigger

EMAIL = {"type": "send_email", "from_email": "a@b.test", "subject": "S", "text": "T"}


def _field(raw, parse=parse_steps) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        parse(raw)
    return caught.value.errors[0]["field"]


def test_errors_name_the_bad_part() -> None:
    assert _field([]) == "steps"
    assert _field([{"type": "teleport"}]) == "steps[0].type"
    assert _field([EMAIL, {"type": "wait", "seconds": -1}]) == "steps[1].seconds"
    assert _field([{"type": "wait", "seconds": 5, "sql": "x"}]) == "steps[0].sql"
    assert _field([{**EMAIL, "from_email": "nobody"}]) == "steps[0].from_email"
    assert _field([{**EMAIL, "subject": "a\r\nBcc: x"}]) == "steps[0].subject"
    assert _field([{"type": "add_to_list", "list_id": "nope"}]) == "steps[0].list_id"
    assert _field([{"type": "branch", "condition": {"all": [{"field": "email", "op": "zz",
                                                             "value": "x"}]}}]) == \
        "steps[0].condition.all[0].op"
    assert _field({"type": "event", "name": "bad name!"}, parse_trigger) == "trigger.name"
    assert _field({"type": "list_subscribed"}, parse_trigger) == "trigger.list_id"


def test_branches_only_jump_forward_to_known_steps() -> None:
    condition = {"attribute": "plan", "op": "eq", "value": "pro"}
    steps = [{**EMAIL, "id": "a"}, {"type": "branch", "condition": condition, "then": "a"}]
    assert _field(steps) == "steps[1].then"
    steps[1]["then"] = "missing"
    assert _field(steps) == "steps[1].then"
    steps[1]["then"] = "exit"
    steps.append({**EMAIL, "id": "c"})
    steps[1]["else"] = "c"
    parsed = parse_steps(steps)
    assert [step.id for step in parsed] == ["a", "step-2", "c"]
    assert _field([{**EMAIL, "id": "x"}, {**EMAIL, "id": "x"}]) == "steps[1].id"


def test_wait_until_and_previous_email_are_checked() -> None:
    assert _field([{"type": "wait", "until": {"time": "25:00"}}]) == "steps[0].until.time"
    assert _field([{"type": "wait", "until": {"time": "09:00", "weekdays": ["funday"]}}]) == \
        "steps[0].until.weekdays"
    assert _field([{"type": "branch", "previous_email": "read"}]) == "steps[0].previous_email"
    assert _field([{"type": "branch"}]) == "steps[0].condition"
    (step,) = parse_steps([{"type": "wait", "until": {"time": "09:00",
                                                      "weekdays": ["fri", "mon"]}}])
    assert step.options["until"] == {"time": "09:00", "weekdays": ["mon", "fri"]}


def test_date_attribute_triggers_are_checked() -> None:
    trigger = parse_trigger({"type": "date_attribute", "attribute": "trial_end",
                             "days_before": 3})
    assert trigger.to_json() == {"type": "date_attribute", "attribute": "trial_end",
                                 "days_before": 3, "yearly": False}
    assert _field({"type": "date_attribute", "attribute": "a b"}, parse_trigger) == \
        "trigger.attribute"
    assert _field({"type": "date_attribute", "attribute": "x", "days_before": 999},
                  parse_trigger) == "trigger.days_before"
