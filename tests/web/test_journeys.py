"""``/v1/journeys`` and ``/v1/events``: CRUD, states, versions, stats, roles and isolation."""

from __future__ import annotations

import uuid

from swiftmail_core.db import tenant_tx
from swiftmail_core.journeys import runner
from tests.core.journeys.conftest import cancel_journey_mail, email_step

STEPS = [email_step("welcome"), {"id": "pause", "type": "wait", "seconds": 86400},
         email_step("tips")]
BODY = {"name": "Onboarding", "trigger": {"type": "event", "name": "signup"}, "steps": STEPS}


def test_create_activate_enroll_run_and_stats(owner_a, viewer_a) -> None:  # type: ignore[no-untyped-def]
    made = owner_a.post("/v1/journeys", BODY)
    assert made.status_code == 201, made.text
    journey = made.json
    assert (journey["status"], journey["version"], journey["steps"]) == ("draft", 1, STEPS)
    path = f"/v1/journeys/{journey['id']}"
    assert owner_a.post("/v1/journeys", BODY).status_code == 409  # the name is taken
    # a draft enrolls nobody
    fired = owner_a.post("/v1/events", {"name": "signup", "email": "new@journeys.test"})
    assert fired.status_code == 202 and fired.json["journey_ids"] == []
    assert owner_a.post(f"{path}/activate").json["status"] == "active"
    assert owner_a.post(f"{path}/activate").status_code == 409
    fired = owner_a.post("/v1/events", {"name": "signup", "email": "new@journeys.test",
                                        "data": {"plan": "pro"}})
    assert fired.json["journey_ids"] == [journey["id"]]
    again = owner_a.post("/v1/events", {"name": "signup",
                                        "contact_id": fired.json["contact_id"]})
    assert again.json["journey_ids"] == []  # enrolled once
    runner.run_due()
    stats = viewer_a.get(f"{path}/stats").json
    assert (stats["entered"], stats["active"], stats["completed"], stats["exited"]) == (1, 1, 0, 0)
    assert [(s["step_id"], s["ran"]) for s in stats["steps"]] == [("welcome", 1), ("pause", 1)]
    # editing the steps makes version 2; the running contact stays on version 1
    edited = owner_a.patch(path, {"steps": [email_step("only")]}).json
    assert (edited["version"], edited["steps"][0]["id"]) == (2, "only")
    assert owner_a.patch(path, {"trigger": {"type": "event", "name": "x"}}).status_code == 409
    assert owner_a.delete(path).status_code == 409  # active
    assert owner_a.post(f"{path}/pause").json["status"] == "paused"
    listed = viewer_a.get("/v1/journeys").json
    assert [item["id"] for item in listed["data"]] == [journey["id"]]
    assert viewer_a.post(f"{path}/activate").status_code == 403
    assert viewer_a.post("/v1/events", {"name": "signup", "email": "v@journeys.test"}
                         ).status_code == 403
    assert owner_a.delete(path).status_code == 204
    assert owner_a.get(path).status_code == 404
    cancel_journey_mail()


def test_bad_definitions_are_problems_naming_the_part(owner_a) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ({**BODY, "steps": [{"type": "wait", "seconds": "soon"}]}, "steps[0].seconds"),
        ({**BODY, "steps": [{"type": "branch", "condition": {"field": "nope", "op": "eq",
                                                              "value": 1}}]},
         "steps[0].condition.field"),
        ({**BODY, "trigger": {"type": "cron"}}, "trigger.type"),
        ({**BODY, "trigger": {"type": "list_subscribed", "list_id": str(uuid.uuid4())}},
         "trigger.list_id"),
        ({**BODY, "steps": [{"type": "add_to_list", "list_id": str(uuid.uuid4())}]},
         "steps[0].list_id"),
    ]
    for body, field in cases:
        answer = owner_a.post("/v1/journeys", body)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json["errors"][0]["field"].startswith(field), answer.json
    assert owner_a.post("/v1/events", {"name": "bad name", "email": "a@b.test"}
                        ).json["errors"][0]["field"] == "name"
    assert owner_a.post("/v1/events", {"name": "x"}).status_code == 422


def test_another_tenants_journeys_and_contacts_are_not_found(owner_a, owner_b, tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = owner_a.post("/v1/journeys", BODY).json
    path = f"/v1/journeys/{journey['id']}"
    owner_a.post(f"{path}/activate")
    contact = owner_a.post("/v1/events", {"name": "signup", "email": "mine@a.test"}).json
    for answer in (owner_b.get(path), owner_b.get(f"{path}/stats"),
                   owner_b.patch(path, {"name": "stolen"}), owner_b.post(f"{path}/pause"),
                   owner_b.delete(path),
                   owner_b.post("/v1/events", {"name": "signup",
                                               "contact_id": contact["contact_id"]})):
        assert answer.status_code == 404, answer.text
    assert owner_b.get("/v1/journeys").json["data"] == []
    # B's journey on the same event never enrolls A's contact
    theirs = owner_b.post("/v1/journeys", BODY).json
    owner_b.post(f"/v1/journeys/{theirs['id']}/activate")
    owner_a.post("/v1/events", {"name": "signup", "contact_id": contact["contact_id"]})
    with tenant_tx(tenant_a.id) as database:
        (count,) = database.execute_sql("SELECT count(*) FROM journey_enrollments").fetchone()
    assert count == 1
    assert owner_b.get(f"/v1/journeys/{theirs['id']}/stats").json["entered"] == 0
    cancel_journey_mail()


def test_subscribing_through_the_api_enrolls(owner_a) -> None:  # type: ignore[no-untyped-def]
    list_id = owner_a.post("/v1/lists", {"name": "News"}).json["id"]
    journey = owner_a.post("/v1/journeys", {
        **BODY, "trigger": {"type": "list_subscribed", "list_id": list_id}}).json
    owner_a.post(f"/v1/journeys/{journey['id']}/activate")
    answer = owner_a.post(f"/v1/lists/{list_id}/subscriptions", {"email": "s@journeys.test"})
    assert answer.status_code == 201, answer.text
    assert owner_a.get(f"/v1/journeys/{journey['id']}/stats").json["entered"] == 1


def test_a_draft_cannot_be_pointed_at_another_tenants_list(owner_a, owner_b) -> None:  # type: ignore[no-untyped-def]
    their_list = owner_a.post("/v1/lists", {"name": "A only"}).json["id"]
    draft = owner_b.post("/v1/journeys", BODY).json
    answer = owner_b.patch(f"/v1/journeys/{draft['id']}",
                           {"trigger": {"type": "list_subscribed", "list_id": their_list}})
    assert answer.status_code == 422 and answer.json["errors"][0]["field"] == "trigger.list_id"
    dated = owner_b.patch(f"/v1/journeys/{draft['id']}", {"trigger": {
        "type": "date_attribute", "attribute": "trial_end", "days_before": 3}})
    assert dated.json["trigger"] == {"type": "date_attribute", "attribute": "trial_end",
                                     "days_before": 3, "yearly": False}
    yearly = owner_b.patch(f"/v1/journeys/{draft['id']}", {"trigger": {
        "type": "date_attribute", "attribute": "birthday", "yearly": True}})
    assert yearly.json["trigger"]["yearly"] is True
    bad = owner_b.patch(f"/v1/journeys/{draft['id']}", {"trigger": {
        "type": "date_attribute", "attribute": "birthday", "yearly": 1}})
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "trigger.yearly"


def test_suppressing_through_the_api_exits_journeys(owner_a) -> None:  # type: ignore[no-untyped-def]
    journey = owner_a.post("/v1/journeys", BODY).json
    owner_a.post(f"/v1/journeys/{journey['id']}/activate")
    owner_a.post("/v1/events", {"name": "signup", "email": "gone@journeys.test"})
    assert owner_a.post("/v1/suppressions", {"email": "Gone@journeys.test"}).status_code == 201
    stats = owner_a.get(f"/v1/journeys/{journey['id']}/stats").json
    assert (stats["exited"], stats["exit_reasons"]) == (1, {"suppressed": 1})
