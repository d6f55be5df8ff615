"""Templates: CRUD, sandbox validation, preview, isolation."""

from __future__ import annotations


def test_template_crud_and_preview(owner_a, viewer_a) -> None:
    made = owner_a.post("/v1/templates", {
        "name": "Welcome", "subject": "Hi {{ contact.name }}",
        "html": "<p>Hello {{ contact.name }}</p>", "text": "Hello {{ contact.name }}"})
    assert made.status_code == 201, made.text
    path = made.headers["Location"]
    shown = viewer_a.post(path + "/preview", {"sample": {"contact": {
        "email": "z@example.com", "name": "<Zed>", "attributes": {}}}})
    assert shown.status_code == 200, shown.text
    assert shown.json["subject"] == "Hi <Zed>"
    assert "Hello &lt;Zed&gt;" in shown.json["html"]
    assert owner_a.patch(path, {"subject": "New"}).json["subject"] == "New"
    assert viewer_a.delete(path).status_code == 403
    assert owner_a.delete(path).status_code == 204


def test_bad_template_is_422_naming_the_field(owner_a) -> None:
    result = owner_a.post("/v1/templates", {"name": "Bad", "html": "<p>{{ oops </p>"})
    assert result.status_code == 422
    assert result.json["errors"][0]["field"].startswith("html")


def test_sandbox_blocks_escapes(owner_a) -> None:
    made = owner_a.post("/v1/templates", {
        "name": "Evil", "subject": "x",
        "html": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    if made.status_code == 201:
        shown = owner_a.post(made.headers["Location"] + "/preview", {})
        assert shown.status_code == 422
        assert "subclasses" not in shown.text or shown.json["type"].endswith("/validation")
    else:
        assert made.status_code == 422


def test_other_tenants_template_is_404(owner_a, owner_b) -> None:
    theirs = owner_b.post("/v1/templates", {"name": "T", "html": "secret"}).json
    path = f"/v1/templates/{theirs['id']}"
    assert owner_a.get(path).status_code == 404
    assert owner_a.post(path + "/preview", {}).status_code == 404
    assert owner_a.patch(path, {"name": "mine"}).status_code == 404


def test_draft_preview_without_saving(viewer_a) -> None:
    shown = viewer_a.post("/v1/templates/preview", {
        "subject": "Hi {{ contact.name }}", "html": "<p>{{ contact.name }}</p>",
        "sample": {"contact": {"email": "q@example.com", "name": "Q", "attributes": {}}}})
    assert shown.status_code == 200, shown.text
    assert shown.json["subject"] == "Hi Q"
    broken = viewer_a.post("/v1/templates/preview", {"html": "{% if %}"})
    assert broken.status_code == 422
    assert viewer_a.get("/v1/templates").json["data"] == []
