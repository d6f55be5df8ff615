"""Lists and subscriptions: CRUD, double opt-in, transitions, isolation."""

from __future__ import annotations

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Message


def test_list_crud_and_counts(owner_a, viewer_a) -> None:
    made = owner_a.post("/v1/lists", {"name": "News", "description": "Weekly"})
    assert made.status_code == 201
    path = made.headers["Location"]
    assert owner_a.post("/v1/lists", {"name": "News"}).status_code == 409
    assert owner_a.patch(path, {"double_opt_in": True}).json["double_opt_in"] is True
    assert viewer_a.get(path).json["counts"] == {"unconfirmed": 0, "confirmed": 0,
                                                 "unsubscribed": 0}
    assert viewer_a.patch(path, {"name": "x"}).status_code == 403
    assert owner_a.delete(path).status_code == 204
    assert owner_a.get(path).status_code == 404


def test_single_opt_in_confirms_at_once(owner_a) -> None:
    lst = owner_a.post("/v1/lists", {"name": "Single"}).json
    sub = owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"email": "x@example.com"})
    assert sub.status_code == 201, sub.text
    assert sub.json["status"] == "confirmed"
    contact_id = sub.json["contact_id"]
    base = f"/v1/lists/{lst['id']}/subscriptions/{contact_id}"
    gone = owner_a.post(base + "/unsubscribe")
    assert gone.json["status"] == "unsubscribed" and gone.json["unsubscribed_at"]
    assert owner_a.post(base + "/confirm").status_code == 409
    again = owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"contact_id": contact_id})
    assert again.json["status"] == "confirmed"
    listed = owner_a.get(f"/v1/lists/{lst['id']}/subscriptions").json["data"]
    assert [s["contact_id"] for s in listed] == [contact_id]


def test_double_opt_in_writes_a_confirmation_to_the_ledger(owner_a, settings) -> None:
    lst = owner_a.post("/v1/lists", {"name": "Double", "double_opt_in": True}).json
    sub = owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"email": "d@example.com"}).json
    assert sub["status"] == "unconfirmed"
    with tenant_tx(owner_a.tenant_id):
        rows = list(Message.select().where(Message.kind == "confirmation"))
    assert [(r.email, r.payload["list_id"]) for r in rows] == [("d@example.com", lst["id"])]
    url = rows[0].payload["confirm_url"]
    assert "/confirm/" in url and rows[0].payload["data"]["confirm_url"] == url
    assert "contact.data.confirm_url" in rows[0].payload["html"]
    from swiftmail_core.tokens import read_confirm_token

    found = read_confirm_token(settings.secret_key, url.rsplit("/", 1)[1])
    assert str(found.list_id) == lst["id"] and str(found.contact_id) == sub["contact_id"]
    confirmed = owner_a.post(
        f"/v1/lists/{lst['id']}/subscriptions/{sub['contact_id']}/confirm")
    assert confirmed.json["status"] == "confirmed"
    assert owner_a.get(f"/v1/lists/{lst['id']}").json["counts"]["confirmed"] == 1


def test_subscribe_needs_exactly_one_target(owner_a) -> None:
    lst = owner_a.post("/v1/lists", {"name": "T"}).json
    assert owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {}).status_code == 422
    assert owner_a.post(f"/v1/lists/{lst['id']}/subscriptions",
                        {"contact_id": "00000000-0000-0000-0000-000000000000"}).status_code == 404


def test_nested_resources_are_isolated(owner_a, owner_b) -> None:
    their_list = owner_b.post("/v1/lists", {"name": "Theirs"}).json
    their_sub = owner_b.post(f"/v1/lists/{their_list['id']}/subscriptions",
                             {"email": "b@example.com"}).json
    mine = owner_a.post("/v1/lists", {"name": "Mine"}).json
    base = f"/v1/lists/{their_list['id']}/subscriptions"
    assert owner_a.get(base).status_code == 404
    assert owner_a.post(base, {"email": "a@example.com"}).status_code == 404
    assert owner_a.get(f"{base}/{their_sub['contact_id']}").status_code == 404
    assert owner_a.post(f"{base}/{their_sub['contact_id']}/unsubscribe").status_code == 404
    # Their contact id under my list is not found either.
    assert owner_a.post(f"/v1/lists/{mine['id']}/subscriptions",
                        {"contact_id": their_sub["contact_id"]}).status_code == 404
    assert owner_a.get("/v1/contacts", params={"list_id": their_list["id"]}).json["data"] == []


def test_confirmation_row_composes_through_the_sending_pipeline(owner_a, settings,
                                                                runtime) -> None:
    import email
    import email.policy

    from swiftmail_core.sending.compose import Composer
    from swiftmail_core.sending.outbox import ClaimedMessage

    owner_a.post("/v1/sending-domains", {"domain": "news.example.com"})
    lst = owner_a.post("/v1/lists", {"name": "{{ evil }} Weekly", "double_opt_in": True}).json
    owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"email": "c@example.com"})
    with tenant_tx(owner_a.tenant_id):
        row = Message.get(Message.kind == "confirmation")
    claimed = ClaimedMessage(
        ledger_id=row.id, tenant_id=row.tenant_id, campaign_id=None, contact_id=row.contact_id,
        email=row.email, kind=row.kind, transport=row.transport, attempts=0,
        payload=row.payload, lease_owner="test")
    messages, failures = Composer(settings, runtime.plugins).compose([claimed])
    assert failures == {}
    parsed = email.message_from_bytes(messages[0].raw, policy=email.policy.default)
    assert parsed["Subject"] == "Please confirm your subscription to {{ evil }} Weekly"
    text = parsed.get_body(("plain",)).get_content()
    assert row.payload["confirm_url"] in text
    assert parsed["From"].addresses[0].addr_spec == "no-reply@news.example.com"
