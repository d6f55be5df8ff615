"""The OpenAPI document agrees with the routes; every route has docs and a policy."""

from __future__ import annotations

from swiftmail_web.openapi import routed_methods, undocumented


def test_every_v1_method_has_docs_and_policy(app) -> None:
    assert undocumented(app) == []


def test_document_matches_routes(app, client) -> None:
    document = client.simulate_get("/v1/openapi.json").json
    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    routed = {(path, method) for path, methods in routed_methods(app).items()
              if path.startswith("/v1/") and path != "/v1/openapi.json" for method in methods}
    assert documented == routed
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"], (method, path)
            if method == "post":
                names = {p["name"] for p in operation["parameters"]}
                assert "Idempotency-Key" in names, path


def test_document_is_valid_openapi(client) -> None:
    from openapi_spec_validator import validate

    validate(client.simulate_get("/v1/openapi.json").json)


def test_resource_families_are_present(client) -> None:
    paths = client.simulate_get("/v1/openapi.json").json["paths"]
    for expected in ("/v1/contacts", "/v1/contacts/bulk", "/v1/lists",
                     "/v1/lists/{list_id}/subscriptions", "/v1/api-keys", "/v1/tenant",
                     "/v1/suppressions", "/v1/templates/{template_id}/preview",
                     "/v1/sending-domains/{domain_id}/verify",
                     "/v1/webhooks/{webhook_id}/rotate-secret",
                     "/v1/campaigns/{campaign_id}/schedule", "/v1/campaigns/{campaign_id}/messages",
                     "/v1/messages"):
        assert expected in paths, expected
