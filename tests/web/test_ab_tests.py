"""A/B tests over the API: settings and variants, errors naming the field, roles, tenants."""

from __future__ import annotations

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Campaign

VARIANTS = [{"name": "Short", "subject": "Sale!"},
            {"name": "Long", "subject": "Our spring sale starts today", "from_name": "Ana",
             "html": "<p>Hi {{ contact.name }}, <a href=\"https://shop.example/b\">shop</a></p>"}]


def _draft(caller, name: str = "Launch"):  # type: ignore[no-untyped-def]
    lst = caller.post("/v1/lists", {"name": f"L-{name}"}).json
    made = caller.post("/v1/campaigns", {
        "name": name, "subject": "Hello {{ contact.name }}", "html": "<p>Hi</p>",
        "from_email": "news@example.com", "list_ids": [lst["id"]]})
    assert made.status_code == 201, made.text
    return made.json


def _field(result) -> str:  # type: ignore[no-untyped-def]
    assert result.status_code == 422, result.text
    assert result.headers["content-type"].startswith("application/problem+json")
    return result.json["errors"][0]["field"]


def test_set_show_and_drop_a_test(owner_a, viewer_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert owner_a.get(path).status_code == 404  # no test yet
    put = owner_a.put(path, {"variants": VARIANTS, "test_percent": 30, "metric": "clicks",
                             "decide_after_seconds": 3600})
    assert put.status_code == 200, put.text
    shown = viewer_a.get(path).json
    assert shown["object"] == "ab_test" and shown["phase"] == "not_started"
    assert (shown["test_percent"], shown["metric"], shown["decide_after_seconds"]) == (
        30, "clicks", 3600)
    assert shown["winner"] is None and shown["decide_at"] is None and shown["waiting"] == 0
    assert shown["decided_on"] is None
    first, second = shown["variants"]
    assert (first["key"], first["subject"], first["html"]) == ("A", "Sale!", None)
    assert (second["key"], second["from_name"]) == ("B", "Ana")
    assert first["recipients"] == 0
    assert first["open_rate"] == {"value": None, "low": None, "high": None}
    # Defaults, and a PUT replaces the whole test.
    three = [{"subject": "one"}, {"subject": "two"}, {"subject": "three"}]
    again = owner_a.put(path, {"variants": three}).json
    assert [v["key"] for v in again["variants"]] == ["A", "B", "C"]
    assert (again["test_percent"], again["metric"], again["decide_after_seconds"]) == (
        20, "opens", 14400)
    assert owner_a.delete(path).status_code == 204
    assert owner_a.get(path).status_code == 404
    assert owner_a.delete(path).status_code == 404


def test_bad_input_names_the_field(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert _field(owner_a.put(path, {"variants": VARIANTS[:1]})) == "variants"
    assert _field(owner_a.put(path, {"variants": [{}] * 6})) == "variants"
    assert _field(owner_a.put(path, {})) == "variants"
    assert _field(owner_a.put(path, {"variants": VARIANTS, "metric": "vibes"})) == "metric"
    assert _field(owner_a.put(path, {"variants": VARIANTS, "test_percent": 0})) == "test_percent"
    assert _field(owner_a.put(path, {"variants": [{}, {"subject": 7}]})) == "variants[1].subject"
    assert _field(owner_a.put(path, {"variants": [{"colour": "red"}, {}]})) == "variants[0].colour"
    assert _field(owner_a.put(path, {"variants": [{}, {}, {"html": "<p>{{ oops </p>"}]})) == (
        "variants[2].html")
    assert _field(owner_a.put(path, {"variants": [{"from_name": "a\r\nBcc: x"}, {}]})) == (
        "variants[0].from_name")
    assert _field(owner_a.put(path, {"variants": ["A", "B"]})) == "variants"
    assert owner_a.get(path).status_code == 404  # nothing was stored


def test_roles(owner_a, viewer_a, editor_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert viewer_a.put(path, {"variants": VARIANTS}).status_code == 403
    assert editor_a.put(path, {"variants": VARIANTS}).status_code == 200
    assert viewer_a.get(path).status_code == 200
    assert viewer_a.post(f"{path}/winner", {"variant": "A"}).status_code == 403
    assert viewer_a.delete(path).status_code == 403
    assert editor_a.delete(path).status_code == 204


def test_another_tenant_cannot_see_or_set_a_test_or_its_winner(owner_a, owner_b) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert owner_a.put(path, {"variants": VARIANTS}).status_code == 200
    with tenant_tx(owner_a.tenant_id):
        Campaign.update(status="sending", audience_resolved_at=Campaign.created_at).where(
            Campaign.id == campaign["id"]).execute()
    assert owner_b.get(path).status_code == 404
    assert owner_b.put(path, {"variants": VARIANTS[::-1]}).status_code == 404
    assert owner_b.delete(path).status_code == 404
    assert owner_b.post(f"{path}/winner", {"variant": "B"}).status_code == 404
    shown = owner_a.get(path).json
    assert shown["winner"] is None and shown["variants"][0]["subject"] == "Sale!"


def test_variants_change_only_before_sending(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert owner_a.post(f"/v1/campaigns/{campaign['id']}/schedule",
                        {"scheduled_at": "2099-01-01T09:00:00Z"}).status_code == 200
    assert owner_a.put(path, {"variants": VARIANTS}).status_code == 200  # scheduled: fine
    with tenant_tx(owner_a.tenant_id):
        Campaign.update(status="sending").where(Campaign.id == campaign["id"]).execute()
    late = owner_a.put(path, {"variants": VARIANTS[::-1]})
    assert late.status_code == 409 and "draft or scheduled" in late.json["detail"]
    assert owner_a.delete(path).status_code == 409
    assert owner_a.get(path).json["variants"][0]["subject"] == "Sale!"


def test_winner_by_hand_checks_state_and_variant(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}/ab"
    assert owner_a.post(f"{path}/winner", {"variant": "A"}).status_code == 404  # no test
    owner_a.put(path, {"variants": VARIANTS, "metric": "manual"})
    assert owner_a.post(f"{path}/winner", {"variant": "A"}).status_code == 409  # a draft
    with tenant_tx(owner_a.tenant_id):
        Campaign.update(status="sending", audience_resolved_at=Campaign.created_at).where(
            Campaign.id == campaign["id"]).execute()
    assert owner_a.get(path).json["phase"] == "waiting_for_choice"
    assert _field(owner_a.post(f"{path}/winner", {"variant": "C"})) == "variant"
    assert _field(owner_a.post(f"{path}/winner", {"variant": "Z"})) == "variant"
    key = {"Idempotency-Key": "pick-b-once"}
    chosen = owner_a.post(f"{path}/winner", {"variant": "B"}, headers=key)
    assert chosen.status_code == 200, chosen.text
    assert (chosen.json["winner"], chosen.json["decided_by"], chosen.json["phase"]) == (
        "B", "manual", "decided")
    replayed = owner_a.post(f"{path}/winner", {"variant": "B"}, headers=key)
    assert replayed.status_code == 200 and replayed.headers.get("idempotent-replayed") == "true"
    again = owner_a.post(f"{path}/winner", {"variant": "A"})
    assert again.status_code == 409 and "B won" in again.json["detail"]


def test_a_test_cancelled_before_its_winner_has_ended(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}"
    owner_a.put(f"{path}/ab", {"variants": VARIANTS})
    assert owner_a.post(f"{path}/cancel").status_code == 200
    shown = owner_a.get(f"{path}/ab").json
    assert (shown["phase"], shown["winner"]) == ("ended", None)


def test_a_test_send_names_a_variant_of_the_test(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}"
    assert _field(owner_a.post(f"{path}/test", {"emails": ["qa@example.com"],
                                                 "variant": "B"})) == "variant"  # no test yet
    owner_a.put(f"{path}/ab", {"variants": VARIANTS})
    sent = owner_a.post(f"{path}/test", {"emails": ["qa@example.com"], "variant": "B"})
    assert sent.status_code == 200, sent.text
    (message_id,) = sent.json["message_ids"]
    ledger = owner_a.get(f"{path}/messages").json["data"]
    assert [(m["id"], m["kind"], m["variant"]) for m in ledger] == [(message_id, "test", "B")]
