"""Segments: the definition language, count and preview, isolation, and a fuzzed compiler."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.segments.definition import parse_definition
from swiftmail_core.segments.service import count_matching, matching_contacts

CAMPAIGN = str(uuid.uuid4())


def _contact(tenant_id, email: str, attributes: str = "{}", status: str = "active",  # type: ignore[no-untyped-def]
             age_days: int = 0) -> str:
    contact_id = str(uuid.uuid4())
    app_db.execute_sql(
        "INSERT INTO contacts (tenant_id, id, email, attributes, status, created_at) "
        "VALUES (%s, %s, %s, %s::jsonb, %s, now() - make_interval(days => %s))",
        (str(tenant_id), contact_id, email, attributes, status, age_days))
    return contact_id


def _event(tenant_id, contact_id: str, kind: str, days_ago: int, machine: bool = False) -> None:  # type: ignore[no-untyped-def]
    app_db.execute_sql(
        "INSERT INTO events (tenant_id, type, campaign_id, contact_id, occurred_at, is_machine) "
        "VALUES (%s, %s, %s, %s, now() - make_interval(days => %s), %s)",
        (str(tenant_id), kind, CAMPAIGN, contact_id, days_ago, machine))


@pytest.fixture
def people(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    """Four contacts of tenant A with attributes, a list and engagement; one of B."""
    with tenant_tx(tenant_a.id):
        ann = _contact(tenant_a.id, "ann@example.com",
                       '{"plan": "pro", "score": 10, "trial_end": "2030-05-01"}')
        bob = _contact(tenant_a.id, "bob@example.com", '{"plan": "free", "score": 3}')
        _contact(tenant_a.id, "cat@example.org", status="unsubscribed", age_days=40)
        dan = _contact(tenant_a.id, "dan@example.org",
                       '{"plan": "Pro Plus", "score": "7", "trial_end": "soon"}')
        list_id = str(uuid.uuid4())
        app_db.execute_sql("INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, 'L')",
                           (str(tenant_a.id), list_id))
        for contact, status in ((ann, "confirmed"), (bob, "unconfirmed")):
            app_db.execute_sql("INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                               "VALUES (%s, %s, %s, %s)", (str(tenant_a.id), list_id, contact, status))
        _event(tenant_a.id, ann, "opened", 2)
        _event(tenant_a.id, bob, "opened", 1, machine=True)
        _event(tenant_a.id, dan, "opened", 100)
    with tenant_tx(tenant_b.id):
        _contact(tenant_b.id, "eve@example.com", '{"plan": "pro", "score": 99}')
    return {"list": list_id, "tenant": tenant_a, "other": tenant_b}


def _emails(tenant_id, definition) -> set[str]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return {row.email.split("@")[0] for row in matching_contacts(tenant_id, definition)}


CASES = [
    ({"attribute": "plan", "op": "eq", "value": "pro"}, {"ann"}),
    ({"attribute": "plan", "op": "neq", "value": "pro"}, {"bob", "cat", "dan"}),
    ({"attribute": "score", "op": "gt", "value": 5}, {"ann"}),  # "7" is text, not a number
    ({"attribute": "score", "op": "lte", "value": 3}, {"bob"}),
    ({"attribute": "trial_end", "op": "before", "value": "2031-01-01"}, {"ann"}),
    ({"attribute": "trial_end", "op": "after", "value": "2031-01-01"}, set()),
    ({"attribute": "plan", "op": "in", "value": ["pro", "free"]}, {"ann", "bob"}),
    ({"attribute": "plan", "op": "contains", "value": "PRO"}, {"ann", "dan"}),
    ({"attribute": "trial_end", "op": "exists"}, {"ann", "dan"}),
    ({"field": "email", "op": "contains", "value": "example.org"}, {"cat", "dan"}),
    ({"field": "email", "op": "eq", "value": "ANN@example.com"}, {"ann"}),
    ({"field": "status", "op": "in", "value": ["unsubscribed", "bounced"]}, {"cat"}),
    ({"field": "created_at", "op": "within_days", "value": 30}, {"ann", "bob", "dan"}),
    ({"event": "opened"}, {"ann", "bob", "dan"}),
    ({"event": "opened", "within_days": 30}, {"ann", "bob"}),
    ({"event": "opened", "within_days": 30, "human_only": True}, {"ann"}),
    ({"not": {"event": "opened"}}, {"cat"}),
    ({"all": [{"event": "clicked"}]}, set()),
    ({"any": [{"attribute": "plan", "op": "eq", "value": "free"},
              {"field": "status", "op": "eq", "value": "unsubscribed"}]}, {"bob", "cat"}),
    ({"all": [{"attribute": "plan", "op": "exists"},
              {"not": {"attribute": "score", "op": "gt", "value": 5}}]}, {"bob", "dan"}),
]


@pytest.mark.parametrize(("definition", "expected"), CASES)
def test_each_condition_selects_what_it_says(people, definition, expected) -> None:  # type: ignore[no-untyped-def]
    assert _emails(people["tenant"].id, definition) == expected


def test_list_membership_by_status(people) -> None:  # type: ignore[no-untyped-def]
    tenant = people["tenant"].id
    assert _emails(tenant, {"list": people["list"]}) == {"ann"}
    assert _emails(tenant, {"list": people["list"], "status": "any"}) == {"ann", "bob"}
    # another tenant naming this list (or this campaign) selects nothing of A's
    other = people["other"].id
    assert _emails(other, {"list": people["list"], "status": "any"}) == set()
    assert _emails(other, {"event": "opened", "campaign_id": CAMPAIGN}) == set()


@pytest.mark.parametrize(("definition", "field"), [
    ({}, "definition"),
    ({"all": []}, "definition.all"),
    ({"all": [{"attribute": "plan", "op": "like", "value": "x"}]}, "definition.all[0].op"),
    ({"field": "password_hash", "op": "eq", "value": "x"}, "definition.field"),
    ({"attribute": "plan'; DROP TABLE contacts; --", "op": "eq", "value": 1},
     "definition.attribute"),
    ({"any": [{"event": "opened", "within_days": 0}]}, "definition.any[0].within_days"),
    ({"list": "not-a-uuid"}, "definition.list"),
    ({"attribute": "d", "op": "before", "value": "2030-02-30"}, "definition.value"),
    ({"attribute": "n", "op": "gt", "value": float("nan")}, "definition.value"),
    ({"field": "status", "op": "eq", "value": "zombie"}, "definition.value"),
    ({"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {
        "field": "name", "op": "exists"}}}}}}}}}, "definition.not.not.not.not.not.not.not.not"),
])
def test_a_bad_definition_names_the_bad_part(definition, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        parse_definition(definition)
    assert caught.value.errors[0]["field"] == field


def test_api_crud_count_and_preview(owner_a, owner_b, viewer_a, people) -> None:  # type: ignore[no-untyped-def]
    # the fixture seeded tenant_a, the tenant of owner_a
    body = {"name": "Pro users", "definition": {"attribute": "plan", "op": "contains",
                                                "value": "pro"}}
    made = owner_a.post("/v1/segments", body)
    assert made.status_code == 201, made.text
    path = f"/v1/segments/{made.json['id']}"
    assert owner_a.post("/v1/segments", body).status_code == 409
    assert owner_a.get(f"{path}/count").json["count"] == 2
    page = owner_a.get(f"{path}/contacts", params={"limit": 1}).json
    assert page["has_more"] is True and len(page["data"]) == 1
    rest = owner_a.get(f"{path}/contacts", params={"starting_after": page["data"][0]["id"]}).json
    assert rest["has_more"] is False
    assert {c["email"] for c in page["data"] + rest["data"]} == {"ann@example.com",
                                                                  "dan@example.org"}
    bad = owner_a.patch(path, {"definition": {"attribute": "plan", "op": "matches"}})
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "definition.op"
    assert owner_a.patch(path, {"name": "Pros"}).json["name"] == "Pros"
    assert viewer_a.get(f"{path}/count").status_code == 200
    assert viewer_a.post("/v1/segments", {**body, "name": "v"}).status_code == 403
    for suffix in ("", "/count", "/contacts"):
        assert owner_b.get(path + suffix).status_code == 404
    assert owner_b.delete(path).status_code == 404
    assert owner_a.delete(path).status_code == 204


#: CI runs the same derandomised examples every time; SWIFTMAIL_FUZZ_EXAMPLES searches longer.
FUZZ = settings(max_examples=int(os.environ.get("SWIFTMAIL_FUZZ_EXAMPLES", "300")),
                deadline=None, derandomize=not os.environ.get("SWIFTMAIL_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _refused_or_safe(people, raw) -> None:  # type: ignore[no-untyped-def]
    """A definition is refused with a 422, or counts only this tenant's rows without error."""
    tenant = people["tenant"].id
    try:
        parse_definition(raw)
    except ValidationError:
        return
    with tenant_tx(tenant):
        assert 0 <= count_matching(tenant, raw) <= 4  # never another tenant's rows


_KEYS = st.sampled_from(["all", "any", "not", "field", "attribute", "list", "event", "op",
                         "value", "status", "campaign_id", "within_days", "human_only", "x"])
_HOSTILE = st.sampled_from([
    "'; DROP TABLE contacts; --", "%s", "%(tenant)s", "\\", "$$", "?", "a'b", "\u2028",
    "email_lower", "tenant_id", "1) OR (1=1", "eq", "pro", "2030-01-01", "00000000-0000-0000-0000-000000000000"])
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**18, 10**18),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), _HOSTILE)
_JSON = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(_KEYS, st.text(max_size=5)), inner,
                                                 max_size=4)), max_leaves=20)


@FUZZ
@given(raw=_JSON)
def test_fuzzed_definitions_are_refused_or_run_safely(people, raw) -> None:  # type: ignore[no-untyped-def]
    _refused_or_safe(people, raw)


_VALUE = st.one_of(_HOSTILE, st.text(max_size=30), st.integers(-10**6, 10**6),
                   st.floats(-1e9, 1e9), st.booleans(), st.lists(_HOSTILE, min_size=1, max_size=3))
_ATTRIBUTE_LEAF = st.fixed_dictionaries({
    "attribute": st.one_of(st.sampled_from(["plan", "score", "trial_end", "a.b", "x-y"]),
                           _HOSTILE),
    "op": st.sampled_from(["eq", "neq", "in", "contains", "lt", "lte", "gt", "gte", "before",
                           "after"]),
    "value": _VALUE})
_FIELD_LEAF = st.fixed_dictionaries({
    "field": st.sampled_from(["email", "name", "status", "created_at"]),
    "op": st.sampled_from(["eq", "neq", "in", "contains", "before", "after", "within_days"]),
    "value": st.one_of(_VALUE, st.integers(1, 400), st.just("2030-01-01"))})
_EVENT_LEAF = st.fixed_dictionaries({"event": st.sampled_from(["opened", "clicked", "bounced"])},
                                    optional={"within_days": st.integers(1, 400),
                                              "human_only": st.booleans(),
                                              "campaign_id": st.just(CAMPAIGN)})
_SHAPED = st.recursive(st.one_of(_ATTRIBUTE_LEAF, _FIELD_LEAF, _EVENT_LEAF), lambda inner: st.one_of(
    st.builds(lambda parts: {"all": parts}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda parts: {"any": parts}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda part: {"not": part}, inner)), max_leaves=8)


@FUZZ
@given(raw=_SHAPED)
def test_well_formed_definitions_with_hostile_values_run_safely(people, raw) -> None:  # type: ignore[no-untyped-def]
    # Structurally right trees reach the compiler and PostgreSQL far more often than
    # random JSON: every one must be refused with a 422 or run, as the app role, over
    # this tenant's rows only, with no SQL error from what a tenant wrote.
    _refused_or_safe(people, raw)


def test_campaigns_take_own_segments_and_a_sunset(owner_a, owner_b) -> None:  # type: ignore[no-untyped-def]
    segment = owner_a.post("/v1/segments", {"name": "S", "definition": {
        "field": "status", "op": "eq", "value": "active"}}).json
    made = owner_a.post("/v1/campaigns", {"name": "to a segment", "segment_ids": [segment["id"]],
                                          "sunset_days": 180})
    assert made.status_code == 201, made.text
    assert made.json["segment_ids"] == [segment["id"]] and made.json["sunset_days"] == 180
    theirs = owner_b.post("/v1/campaigns", {"name": "x", "segment_ids": [segment["id"]]})
    assert theirs.status_code == 422 and theirs.json["errors"][0]["field"] == "segment_ids"
    bad = owner_a.post("/v1/campaigns", {"name": "y", "sunset_days": 0})
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "sunset_days"


def test_a_field_name_that_is_not_text_is_a_422() -> None:
    # Found by the fuzzer: a list as the field name raised TypeError (a 500).
    with pytest.raises(ValidationError) as caught:
        parse_definition({"field": ["email"], "op": "eq", "value": "x"})
    assert caught.value.errors[0]["field"] == "definition.field"
