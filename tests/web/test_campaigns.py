"""Campaigns: CRUD, lifecycle actions through sending.lifecycle, ledger, stats, messages."""

from __future__ import annotations

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Campaign, Message


def _draft(caller, **extra):
    lst = caller.post("/v1/lists", {"name": f"L-{len(extra)}-{id(extra)}"}).json
    body = {"name": "Launch", "subject": "Hello {{ contact.name }}", "html": "<p>Hi</p>",
            "from_email": "news@example.com", "list_ids": [lst["id"]], **extra}
    made = caller.post("/v1/campaigns", body)
    assert made.status_code == 201, made.text
    return made.json


def test_campaign_crud(owner_a, viewer_a) -> None:
    campaign = _draft(owner_a)
    assert campaign["status"] == "draft"
    path = f"/v1/campaigns/{campaign['id']}"
    assert viewer_a.get(path).json["name"] == "Launch"
    assert owner_a.patch(path, {"name": "Launch 2"}).json["name"] == "Launch 2"
    assert owner_a.patch(path, {"status": "sent"}).status_code == 422
    assert owner_a.patch(path, {"headers": {"X-Ok": "a\r\nBcc: x"}}).status_code == 422
    assert viewer_a.post(f"{path}/schedule", {}).status_code == 403
    listed = owner_a.get("/v1/campaigns", params={"status": "draft"}).json["data"]
    assert [c["id"] for c in listed] == [campaign["id"]]
    assert owner_a.delete(path).status_code == 204


def test_references_must_be_own(owner_a, owner_b) -> None:
    their_list = owner_b.post("/v1/lists", {"name": "B"}).json
    result = owner_a.post("/v1/campaigns", {"name": "x", "list_ids": [their_list["id"]]})
    assert result.status_code == 422
    assert result.json["errors"][0]["field"] == "list_ids"


def test_lifecycle_actions(owner_a) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}"
    scheduled = owner_a.post(f"{path}/schedule", {"scheduled_at": "2099-01-01T09:00:00Z"})
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json["status"] == "scheduled"
    assert scheduled.json["scheduled_at"].startswith("2099-01-01T09:00:00")
    assert owner_a.post(f"{path}/pause").status_code == 409
    assert owner_a.post(f"{path}/unschedule").json["status"] == "draft"
    with tenant_tx(owner_a.tenant_id):
        Campaign.update(status="sending").where(Campaign.id == campaign["id"]).execute()
    assert owner_a.post(f"{path}/pause").json["status"] == "paused"
    assert owner_a.post(f"{path}/resume").json["status"] == "sending"
    assert owner_a.patch(path, {"name": "late"}).status_code == 409
    assert owner_a.post(f"{path}/cancel").json["status"] == "cancelled"
    assert owner_a.post(f"{path}/resume").status_code == 409


def test_schedule_refuses_unsendable(owner_a) -> None:
    bare = owner_a.post("/v1/campaigns", {"name": "Bare"}).json
    result = owner_a.post(f"/v1/campaigns/{bare['id']}/schedule", {})
    assert result.status_code == 422
    assert result.json["errors"][0]["field"] in ("list_ids", "from_email")


def test_test_send_and_ledger(owner_a, owner_b) -> None:
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}"
    sent = owner_a.post(f"{path}/test", {"emails": ["t1@example.com", "t2@example.com"]})
    assert sent.status_code == 200, sent.text
    assert len(sent.json["message_ids"]) == 2
    assert owner_a.post(f"{path}/test", {"emails": ["bad"]}).status_code == 422
    with tenant_tx(owner_a.tenant_id):
        assert Message.select().where(Message.kind == "test").count() == 2
    ledger = owner_a.get(f"{path}/messages", params={"limit": 1})
    assert ledger.status_code == 200, ledger.text
    assert ledger.json["has_more"] is True
    second = owner_a.get(f"{path}/messages",
                         params={"starting_after": str(ledger.json["data"][0]["id"])}).json
    assert [m["email"] for m in second["data"]] == ["t2@example.com"]
    for cursor in ("99999999999999999999", "-1", "x"):
        assert owner_a.get(f"{path}/messages",
                           params={"starting_after": cursor}).status_code == 422
    stats = owner_a.get(f"{path}/stats").json
    assert stats["object"] == "campaign_stats"
    for suffix in ("", "/messages", "/stats"):
        assert owner_b.get(path + suffix).status_code == 404
    for action in ("schedule", "pause", "resume", "cancel", "resend-failed"):
        assert owner_b.post(f"{path}/{action}").status_code == 404
    assert owner_b.post(f"{path}/test", {"emails": ["x@example.com"]}).status_code == 404


def test_transactional_message(owner_a, viewer_a) -> None:
    made = owner_a.post("/v1/messages", {"to": "r@example.com", "from_email": "app@example.com",
                                         "subject": "Code", "text": "1234"})
    assert made.status_code == 202, made.text
    assert made.json["kind"] == "transactional" and made.json["status"] == "queued"
    assert viewer_a.post("/v1/messages", {"to": "r@example.com",
                                          "from_email": "a@example.com"}).status_code == 403
    missing = owner_a.post("/v1/messages", {"to": "r@example.com", "from_email": "a@example.com"})
    assert missing.status_code == 422


def test_unknown_transport_is_422(owner_a, runtime) -> None:
    result = owner_a.post("/v1/campaigns", {"name": "T", "transport": "carrier-pigeon"})
    assert result.status_code == 422
    assert "installed" in result.json["errors"][0]["message"]
    installed = sorted(runtime.plugins.transports())
    if installed:
        made = owner_a.post("/v1/campaigns", {"name": "T2", "transport": installed[0]})
        assert made.status_code == 201, made.text


def test_a_sent_campaign_says_why_it_cannot_be_deleted_or_cancelled(owner_a) -> None:
    # Regression: delete said "cancel it first", and cancel then refused: a dead end.
    campaign = _draft(owner_a)
    path = f"/v1/campaigns/{campaign['id']}"
    with tenant_tx(owner_a.tenant_id):
        Campaign.update(status="sent").where(Campaign.id == campaign["id"]).execute()
    deleted = owner_a.delete(path)
    assert deleted.status_code == 409
    assert "kept with its ledger and statistics" in deleted.json["detail"]
    assert "cancel it first" not in deleted.json["detail"]
    cancelled = owner_a.post(f"{path}/cancel")
    assert cancelled.status_code == 409
    assert "final" in cancelled.json["detail"] and "resend-failed" in cancelled.json["detail"]


def test_deleting_a_template_or_domain_a_campaign_uses_clears_the_reference(owner_a) -> None:
    # The foreign keys no longer SET NULL themselves (Citus refuses it): the API does.
    template = owner_a.post("/v1/templates", {"name": "T-del", "subject": "S", "html": "<p>x</p>"})
    assert template.status_code == 201, template.text
    domain = owner_a.post("/v1/sending-domains", {"domain": "del.example.com"})
    assert domain.status_code == 201, domain.text
    campaign = owner_a.post("/v1/campaigns", {"name": "uses both",
                                              "template_id": template.json["id"],
                                              "sending_domain_id": domain.json["id"]})
    assert campaign.status_code == 201, campaign.text
    assert owner_a.delete(f"/v1/templates/{template.json['id']}").status_code == 204
    assert owner_a.delete(f"/v1/sending-domains/{domain.json['id']}").status_code == 204
    after = owner_a.get(f"/v1/campaigns/{campaign.json['id']}").json
    assert after["template_id"] is None and after["sending_domain_id"] is None
