"""Roles are checked on every route, deny by default, from the declared policies."""

from __future__ import annotations

import re

from swiftmail_web.openapi import _resource, routed_methods

from swiftmail_core.principal import role_at_least

ZERO = "00000000-0000-0000-0000-000000000000"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", ZERO, path)


def test_each_role_is_refused_what_its_policy_forbids(app, make_caller, tenant_a) -> None:
    callers = {role: make_caller(tenant_a, role) for role in ("viewer", "editor", "admin")}
    checked = 0
    for path, methods in routed_methods(app).items():
        if not path.startswith("/v1/") or path == "/v1/openapi.json":
            continue
        resource = _resource(app, path)
        for method in methods:
            needed = resource.policy[method].role
            for role, caller in callers.items():
                if role_at_least(role, needed):
                    continue
                result = caller.client.simulate_request(
                    method, _concrete(path), json={},
                    headers={"Authorization": f"Bearer {caller.key}"})
                assert result.status_code == 403, (role, method, path, result.status_code)
                assert result.json["type"].endswith("/forbidden")
                checked += 1
    assert checked >= 40


def test_viewer_cannot_send_delete_or_create_keys(viewer_a) -> None:
    for method, path in (("POST", "/v1/messages"), ("POST", "/v1/api-keys"),
                         ("DELETE", f"/v1/contacts/{ZERO}"),
                         ("POST", f"/v1/campaigns/{ZERO}/schedule"),
                         ("POST", f"/v1/campaigns/{ZERO}/test")):
        result = viewer_a.client.simulate_request(
            method, path, json={}, headers={"Authorization": f"Bearer {viewer_a.key}"})
        assert result.status_code == 403, (method, path)


def test_non_json_body_is_415(owner_a) -> None:
    result = owner_a.client.simulate_post(
        "/v1/contacts", body=b"email=a@example.com",
        headers={"Authorization": f"Bearer {owner_a.key}",
                 "Content-Type": "application/x-www-form-urlencoded"})
    assert result.status_code == 415
    assert result.headers["Content-Type"] == "application/problem+json"
