"""API keys, the tenant's own settings and quotas, suppressions."""

from __future__ import annotations


def test_key_shown_once_and_usable(owner_a, client) -> None:
    made = owner_a.post("/v1/api-keys", {"name": "ci", "role": "viewer",
                                         "scopes": ["contacts:read"]})
    assert made.status_code == 201, made.text
    key = made.json["key"]
    assert key.startswith(made.json["prefix"])
    fetched = owner_a.get(f"/v1/api-keys/{made.json['id']}").json
    assert "key" not in fetched and key not in str(owner_a.get("/v1/api-keys").json)
    auth = {"Authorization": f"Bearer {key}"}
    assert client.simulate_get("/v1/contacts", headers=auth).status_code == 200
    assert client.simulate_get("/v1/lists", headers=auth).status_code == 403
    assert owner_a.delete(f"/v1/api-keys/{made.json['id']}").status_code == 204
    assert client.simulate_get("/v1/contacts", headers=auth).status_code == 401
    assert owner_a.get(f"/v1/api-keys/{made.json['id']}").json["revoked_at"] is not None


def test_key_roles_cannot_escalate(make_caller, tenant_a, viewer_a, editor_a) -> None:
    admin = make_caller(tenant_a, "admin")
    assert viewer_a.post("/v1/api-keys", {"role": "viewer"}).status_code == 403
    assert editor_a.get("/v1/api-keys").status_code == 403
    assert admin.post("/v1/api-keys", {"role": "owner"}).status_code == 403
    assert admin.post("/v1/api-keys", {"role": "admin"}).status_code == 201
    bad = admin.post("/v1/api-keys", {"role": "viewer", "scopes": ["nope"]})
    assert bad.status_code == 422
    assert admin.post("/v1/api-keys", {"role": "superuser"}).status_code == 422
    owner_key = make_caller(tenant_a, "owner")
    keys = owner_key.get("/v1/api-keys").json["data"]
    owner_id = next(k["id"] for k in keys if k["role"] == "owner")
    assert admin.delete(f"/v1/api-keys/{owner_id}").status_code == 403


def test_other_tenants_keys_are_invisible(owner_a, owner_b) -> None:
    theirs = owner_b.post("/v1/api-keys", {"role": "viewer"}).json
    assert owner_a.get(f"/v1/api-keys/{theirs['id']}").status_code == 404
    assert owner_a.delete(f"/v1/api-keys/{theirs['id']}").status_code == 404
    assert theirs["id"] not in owner_a.get("/v1/api-keys", params={"limit": 100}).text


def test_tenant_settings_and_quotas(owner_a, editor_a, owner_b) -> None:
    mine = owner_a.get("/v1/tenant").json
    assert mine["id"] == str(owner_a.tenant_id)
    assert mine["quotas"]["daily_quota"] == 100000
    updated = owner_a.patch("/v1/tenant", {"name": "Acme", "settings": {"footer": "Hi"}})
    assert updated.status_code == 200 and updated.json["settings"] == {"footer": "Hi"}
    refused = owner_a.patch("/v1/tenant", {"daily_quota": 10**9, "status": "active"})
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json["errors"]} == {"daily_quota", "status"}
    assert editor_a.patch("/v1/tenant", {"name": "x"}).status_code == 403
    assert owner_b.get("/v1/tenant").json["name"] != "Acme"


def test_suppressions(owner_a, editor_a, owner_b) -> None:
    made = editor_a.post("/v1/suppressions", {"email": "Spam@Example.com", "detail": "asked"})
    assert made.status_code == 201, made.text
    assert made.json["email"] == "spam@example.com" and made.json["reason"] == "manual"
    assert editor_a.post("/v1/suppressions", {"email": "spam@example.com"}).status_code == 409
    assert editor_a.post("/v1/suppressions", {"email": "x@example.com",
                                              "reason": "hard_bounce"}).status_code == 422
    assert owner_a.get("/v1/suppressions/SPAM@example.com").status_code == 200
    assert owner_b.get("/v1/suppressions/spam@example.com").status_code == 404
    assert owner_b.get("/v1/suppressions").json["data"] == []
    assert owner_b.delete("/v1/suppressions/spam@example.com").status_code == 404
    assert editor_a.delete("/v1/suppressions/spam@example.com").status_code == 403
    page = owner_a.get("/v1/suppressions", params={"reason": "manual"}).json
    assert [s["email"] for s in page["data"]] == ["spam@example.com"]
    assert owner_a.delete("/v1/suppressions/spam@example.com").status_code == 204
    assert owner_a.get("/v1/suppressions/spam@example.com").status_code == 404


def test_a_suppression_with_a_non_ascii_address_answers_201(owner_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: the Location header made an HTML 500 after the row was committed.
    made = owner_a.post("/v1/suppressions", {"email": "jörg@example.de", "reason": "manual"})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == "/v1/suppressions/j%C3%B6rg@example.de"
