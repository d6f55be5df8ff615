"""Webhooks: secret shown once and encrypted at rest, rotation, roles, isolation."""

from __future__ import annotations

from swiftmail_core import crypto
from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Webhook


def test_webhook_lifecycle(owner_a, viewer_a, settings) -> None:
    made = owner_a.post("/v1/webhooks", {"url": "https://hooks.example.com/sm",
                                         "event_types": ["bounced", "complained"]})
    assert made.status_code == 201, made.text
    secret = made.json["secret"]
    assert secret.startswith("whsec_")
    path = made.headers["Location"]
    assert "secret" not in owner_a.get(path).json
    assert secret not in viewer_a.get("/v1/webhooks").text
    with tenant_tx(owner_a.tenant_id):
        stored = bytes(Webhook.get(Webhook.id == made.json["id"]).secret_encrypted)
    assert secret.encode() not in stored
    assert crypto.decrypt(settings.secret_key, stored) == secret.encode()
    rotated = owner_a.post(path + "/rotate-secret")
    assert rotated.status_code == 200 and rotated.json["secret"] != secret
    assert owner_a.patch(path, {"enabled": False}).json["enabled"] is False
    assert owner_a.get(path + "/deliveries").json == {"object": "list", "data": [],
                                                      "has_more": False}
    assert viewer_a.post(path + "/rotate-secret").status_code == 403
    assert owner_a.delete(path).status_code == 204


def test_webhook_validation(owner_a) -> None:
    bad = owner_a.post("/v1/webhooks", {"url": "ftp://x", "event_types": ["nope"]})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json["errors"]} == {"event_types"}
    assert owner_a.post("/v1/webhooks", {"url": "ftp://x"}).status_code == 422
    assert owner_a.post("/v1/webhooks",
                        {"url": "https://u:p@example.com/"}).status_code == 422


def test_other_tenants_webhook_is_404(owner_a, owner_b) -> None:
    theirs = owner_b.post("/v1/webhooks", {"url": "https://b.example.com/"}).json
    path = f"/v1/webhooks/{theirs['id']}"
    for result in (owner_a.get(path), owner_a.patch(path, {"enabled": False}),
                   owner_a.post(path + "/rotate-secret"), owner_a.get(path + "/deliveries"),
                   owner_a.delete(path)):
        assert result.status_code == 404
