"""Contacts: CRUD, filters, bulk upsert, validation, roles and isolation."""

from __future__ import annotations

import uuid


def _create(caller, email="ann@example.com", **extra):
    result = caller.post("/v1/contacts", {"email": email, **extra})
    assert result.status_code == 201, result.text
    return result.json


def test_crud_round_trip(owner_a) -> None:
    contact = _create(owner_a, "Ann@Example.COM", name="Ann", attributes={"plan": "pro"})
    assert contact["email"] == "Ann@example.com"
    assert contact["status"] == "active"
    path = f"/v1/contacts/{contact['id']}"
    assert owner_a.get(path).json == contact
    updated = owner_a.patch(path, {"name": "Annie", "attributes": {"city": "Oslo", "plan": None}})
    assert updated.status_code == 200, updated.text
    assert updated.json["name"] == "Annie"
    assert updated.json["attributes"] == {"city": "Oslo"}
    assert owner_a.delete(path).status_code == 204
    assert owner_a.get(path).status_code == 404


def test_duplicate_email_is_conflict(owner_a) -> None:
    _create(owner_a)
    again = owner_a.post("/v1/contacts", {"email": "ANN@example.com"})
    assert again.status_code == 409
    assert again.json["type"].endswith("/conflict")


def test_validation_names_each_field(owner_a) -> None:
    result = owner_a.post("/v1/contacts", {"email": "not-an-email", "name": 3, "colour": "red",
                                           "tenant_id": str(uuid.uuid4()), "status": "active"})
    assert result.status_code == 422
    assert result.headers["Content-Type"] == "application/problem+json"
    fields = {e["field"]: e["message"] for e in result.json["errors"]}
    assert set(fields) == {"email", "name", "colour", "tenant_id", "status"}
    assert "cannot be set" in fields["tenant_id"]
    assert "cannot be set" in fields["status"]
    assert "not a known field" in fields["colour"]


def test_missing_and_malformed_bodies(owner_a) -> None:
    assert owner_a.post("/v1/contacts", {}).json["errors"] == [
        {"field": "email", "message": "is required"}]
    raw = owner_a.client.simulate_post(
        "/v1/contacts", body=b"{nope", headers={"Authorization": f"Bearer {owner_a.key}",
                                                "Content-Type": "application/json"})
    assert raw.status_code == 422
    listed = owner_a.post("/v1/contacts", [1, 2])
    assert listed.status_code == 422


def test_filters(owner_a) -> None:
    ann = _create(owner_a, "ann@example.com", attributes={"plan": "pro", "city": "Oslo"})
    _create(owner_a, "bob@example.com", attributes={"plan": "free"})
    by_attr = owner_a.get("/v1/contacts", params={"attribute": "plan:pro"}).json["data"]
    assert [c["id"] for c in by_attr] == [ann["id"]]
    by_email = owner_a.get("/v1/contacts", params={"email": "ANN@example.com"}).json["data"]
    assert [c["id"] for c in by_email] == [ann["id"]]
    assert owner_a.get("/v1/contacts", params={"status": "bounced"}).json["data"] == []
    assert owner_a.get("/v1/contacts", params={"status": "weird"}).status_code == 422
    lst = owner_a.post("/v1/lists", {"name": "News"}).json
    owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"contact_id": ann["id"]})
    in_list = owner_a.get("/v1/contacts", params={"list_id": lst["id"]}).json["data"]
    assert [c["id"] for c in in_list] == [ann["id"]]


def test_pagination_is_stable_both_ways(owner_a) -> None:
    ids = [_create(owner_a, f"p{i}@example.com")["id"] for i in range(7)]
    seen, after = [], None
    while True:
        params = {"limit": 3, **({"starting_after": after} if after else {})}
        page = owner_a.get("/v1/contacts", params=params).json
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids
    back = owner_a.get("/v1/contacts", params={"limit": 2, "ending_before": ids[4]}).json
    assert [c["id"] for c in back["data"]] == ids[2:4]
    assert back["has_more"] is True
    assert owner_a.get("/v1/contacts", params={"limit": 0}).status_code == 422
    assert owner_a.get("/v1/contacts", params={"limit": 101}).status_code == 422
    assert owner_a.get("/v1/contacts", params={"starting_after": "zzz"}).status_code == 422


def test_bulk_upsert(owner_a) -> None:
    existing = _create(owner_a, "old@example.com", name="Old", attributes={"a": "1"})
    lst = owner_a.post("/v1/lists", {"name": "Bulk"}).json
    result = owner_a.post("/v1/contacts/bulk", {
        "contacts": [{"email": "OLD@example.com", "attributes": {"b": "2"}},
                     {"email": "new1@example.com", "name": "N1"},
                     {"email": "new2@example.com"}],
        "list_ids": [lst["id"]],
    })
    assert result.status_code == 200, result.text
    assert (result.json["created"], result.json["updated"]) == (2, 1)
    old = owner_a.get(f"/v1/contacts/{existing['id']}").json
    assert old["attributes"] == {"a": "1", "b": "2"} and old["name"] == "Old"
    members = owner_a.get("/v1/contacts", params={"list_id": lst["id"]}).json["data"]
    assert len(members) == 3


def test_bulk_is_all_or_nothing(owner_a) -> None:
    result = owner_a.post("/v1/contacts/bulk", {
        "contacts": [{"email": "fine@example.com"}, {"email": "broken"}]})
    assert result.status_code == 422
    assert result.json["errors"][0]["field"] == "contacts[1].email"
    assert owner_a.get("/v1/contacts").json["data"] == []


def test_roles(viewer_a, editor_a, owner_a) -> None:
    assert viewer_a.get("/v1/contacts").status_code == 200
    denied = viewer_a.post("/v1/contacts", {"email": "v@example.com"})
    assert denied.status_code == 403
    assert denied.json["type"].endswith("/forbidden")
    contact = _create(editor_a, "e@example.com")
    assert editor_a.delete(f"/v1/contacts/{contact['id']}").status_code == 403
    assert owner_a.delete(f"/v1/contacts/{contact['id']}").status_code == 204


def test_scopes(make_caller, tenant_a) -> None:
    reader = make_caller(tenant_a, "admin", scopes=("contacts:read",))
    assert reader.get("/v1/contacts").status_code == 200
    assert reader.post("/v1/contacts", {"email": "s@example.com"}).status_code == 403
    assert reader.get("/v1/lists").status_code == 403


def test_other_tenant_is_404_everywhere(owner_a, owner_b) -> None:
    theirs = _create(owner_b, "secret@example.com")
    path = f"/v1/contacts/{theirs['id']}"
    for result in (owner_a.get(path), owner_a.patch(path, {"name": "x"}), owner_a.delete(path)):
        assert result.status_code == 404
        assert "secret@example.com" not in result.text
    assert owner_a.get("/v1/contacts", params={"email": "secret@example.com"}).json["data"] == []
    assert owner_a.get("/v1/contacts", params={"starting_after": theirs["id"]}).status_code == 422
    # Same email in another tenant is independent.
    assert _create(owner_a, "secret@example.com")["id"] != theirs["id"]
    assert owner_b.get(path).status_code == 200


def test_bulk_without_attributes_keeps_an_object(owner_a) -> None:
    # Regression: the docs' own bulk example (no "attributes") stored JSON null for a new
    # contact and turned an existing one's attributes into an array; PATCH then failed.
    made = owner_a.post("/v1/contacts", {"email": "keep@example.com", "attributes": {"a": 1}})
    assert made.status_code == 201, made.text
    bulk = owner_a.post("/v1/contacts/bulk", {"contacts": [{"email": "keep@example.com"},
                                                           {"email": "new@example.com"}]})
    assert bulk.status_code == 200, bulk.text
    listed = {c["email"]: c for c in owner_a.get("/v1/contacts").json["data"]}
    assert listed["keep@example.com"]["attributes"] == {"a": 1}
    assert listed["new@example.com"]["attributes"] == {}
    patched = owner_a.patch(f"/v1/contacts/{made.json['id']}", {"attributes": {"b": 2}})
    assert patched.status_code == 200 and patched.json["attributes"] == {"a": 1, "b": 2}


def test_migration_repairs_attributes_that_are_not_objects(owner_connection, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    import swiftmail_core.migrations as migrations

    repair = (Path(migrations.__file__).parent / "0153_contact_attributes_object.sql").read_text()
    broken = {"arr@example.com": '[{"a": 1, "b": 1}, null, {"b": 2}]',
              "nul@example.com": "null", "str@example.com": '"x"'}
    with owner_connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY")
        cursor.execute("ALTER TABLE contacts DROP CONSTRAINT contacts_attributes_object")
        for email, attributes in broken.items():
            cursor.execute("INSERT INTO contacts (tenant_id, email, attributes) "
                           "VALUES (%s, %s, %s::jsonb)", (str(tenant_a.id), email, attributes))
        cursor.execute(repair)
        cursor.execute("ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY")
        cursor.execute("SELECT email, attributes FROM contacts WHERE tenant_id = %s",
                       (str(tenant_a.id),))
        repaired = dict(cursor.fetchall())
        cursor.execute("ALTER TABLE contacts FORCE ROW LEVEL SECURITY")
        cursor.execute("COMMIT")
    assert repaired == {"arr@example.com": {"a": 1, "b": 2}, "nul@example.com": {},
                        "str@example.com": {}}


def test_every_api_path_gives_new_contacts_time_ordered_ids(owner_a) -> None:
    # A contact's id is UUIDv7 wherever it is created (swiftmail_core.contact_ids):
    # contacts created together lie together in the indexes and the heap.
    lst = owner_a.post("/v1/lists", {"name": "Ordered"}).json
    made = [
        _create(owner_a, "one@example.com")["id"],
        owner_a.post(f"/v1/lists/{lst['id']}/subscriptions", {"email": "two@example.com"})
        .json["contact_id"],
        owner_a.post("/v1/events", {"name": "signup", "email": "three@example.com"})
        .json["contact_id"],
    ]
    owner_a.post("/v1/contacts/bulk", {"contacts": [{"email": "four@example.com"}]})
    made.append(owner_a.get("/v1/contacts", params={"email": "four@example.com"})
                .json["data"][0]["id"])
    ids = [uuid.UUID(value) for value in made]
    assert [(value.version, value.variant) for value in ids] == [(7, uuid.RFC_4122)] * 4
    assert [value.bytes[:6] for value in ids] == sorted(value.bytes[:6] for value in ids)
