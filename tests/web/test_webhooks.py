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
    assert owner_a.get(path).json["paused_until"] is None
    with tenant_tx(owner_a.tenant_id):  # paused after failures, then disabled
        Webhook.update(paused_until=Webhook.created_at, consecutive_failures=3).where(
            Webhook.id == made.json["id"]).execute()
    assert owner_a.get(path).json["paused_until"] is not None
    enabled = owner_a.patch(path, {"enabled": True}).json  # re-enabling ends the pause
    assert (enabled["paused_until"], enabled["consecutive_failures"]) == (None, 0)
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


def test_saving_refuses_urls_that_reach_inside(owner_a, session_dns) -> None:
    """SSRF at save time: literal and resolved internal addresses are a 422 on `url`."""
    session_dns.add("inside.example.net", "A", "10.0.0.5")
    session_dns.add("metadata.example.net", "A", "169.254.169.254")
    for url in ("https://127.0.0.1/hook", "https://[::1]/hook", "https://10.1.2.3/hook",
                "https://169.254.169.254/latest", "https://inside.example.net/hook",
                "https://metadata.example.net/hook", "https://2130706433/hook",
                "http://hooks.example.com/plain-http"):
        answer = owner_a.post("/v1/webhooks", {"url": url})
        assert answer.status_code == 422, url
        assert answer.json["errors"][0]["field"] == "url", url
    made = owner_a.post("/v1/webhooks", {"url": "https://hooks.example.com/ok"})
    assert made.status_code == 201
    moved = owner_a.patch(f"/v1/webhooks/{made.json['id']}", {"url": "https://10.9.9.9/x"})
    assert moved.status_code == 422
