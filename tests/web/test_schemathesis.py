"""Property-based API tests: schemathesis against the live app, as two tenants.

Bounded: a few examples per operation (``MAX_EXAMPLES`` as tenant A, half
as many as B), so the whole module stays within a minute or two. Checks: no
5xx; status codes, content types and bodies match the OpenAPI document; and
no response to one tenant ever contains an id of the other's objects (both
are seeded with every kind of object; B's fuzzing is checked against
everything A has after its own fuzzing).
"""

from __future__ import annotations

import re
import uuid
import warnings

import falcon.testing
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from swiftmail_core.apikeys import create_api_key

MAX_EXAMPLES = 12
# Operations owned by other areas that currently fail; reported as warnings so
# they stay visible. Remove an entry as soon as its owner fixes it.
KNOWN_BROKEN: set[str] = set()  # e.g. "GET /v1/analytics/tenant"


@pytest.fixture(scope="module")
def fuzz_tenants(app, make_tenant_module):  # type: ignore[no-untyped-def]
    """Tenant A (fuzzed) and B (seeded); returns A's key and B's ids."""
    tenant_a, tenant_b = make_tenant_module("fa"), make_tenant_module("fb")
    key_a = create_api_key(tenant_a.id, role="owner").key
    key_b = create_api_key(tenant_b.id, role="owner").key
    client = falcon.testing.TestClient(app)
    auth_b = {"Authorization": f"Bearer {key_b}"}

    def made(path: str, body: dict, auth: dict[str, str] = auth_b) -> dict:
        result = client.simulate_post(path, json=body, headers=auth)
        assert result.status_code in (200, 201, 202), result.text
        return result.json

    # Tenant A gets real objects of every kind too, so list and item responses
    # carry data that the response schemas are checked against.
    auth_a = {"Authorization": f"Bearer {key_a}"}
    a_list = made("/v1/lists", {"name": "A list", "double_opt_in": True}, auth_a)
    a_contact = made("/v1/contacts", {"email": "a@a.example.com", "attributes": {"k": "v"}},
                     auth_a)
    made(f"/v1/lists/{a_list['id']}/subscriptions", {"contact_id": a_contact["id"]}, auth_a)
    made("/v1/templates", {"name": "A tpl", "subject": "s", "html": "<p>a</p>"}, auth_a)
    made("/v1/webhooks", {"url": "https://a.example.com/hook"}, auth_a)
    made("/v1/sending-domains", {"domain": "a-only.example.com"}, auth_a)
    a_campaign = made("/v1/campaigns", {"name": "A camp", "list_ids": [a_list["id"]],
                                        "from_email": "x@a.example.com", "html": "<p>x</p>",
                                        "subject": "s"}, auth_a)
    made(f"/v1/campaigns/{a_campaign['id']}/test", {"emails": ["t@a.example.com"]}, auth_a)
    made("/v1/suppressions", {"email": "sup@a.example.com"}, auth_a)
    made("/v1/messages", {"to": "r@a.example.com", "from_email": "x@a.example.com",
                          "subject": "s", "text": "t"}, auth_a)
    journey_steps = [{"type": "send_email", "from_email": "x@a.example.com", "subject": "s",
                      "text": "t"}, {"type": "wait", "seconds": 60}]
    a_journey = made("/v1/journeys", {"name": "A journey", "steps": journey_steps,
                                      "trigger": {"type": "event", "name": "go"}}, auth_a)
    made(f"/v1/journeys/{a_journey['id']}/activate", {}, auth_a)
    made("/v1/events", {"name": "go", "contact_id": a_contact["id"]}, auth_a)

    ids = {str(tenant_b.id)}
    contact = made("/v1/contacts", {"email": "victim@b.example.com"})
    lst = made("/v1/lists", {"name": "B list"})
    sub = made(f"/v1/lists/{lst['id']}/subscriptions", {"contact_id": contact["id"]})
    template = made("/v1/templates", {"name": "B tpl", "html": "b"})
    webhook = made("/v1/webhooks", {"url": "https://b.example.com/hook"})
    domain = made("/v1/sending-domains", {"domain": "b-only.example.com"})
    campaign = made("/v1/campaigns", {"name": "B camp", "list_ids": [lst["id"]]})
    key = made("/v1/api-keys", {"role": "viewer"})
    made("/v1/suppressions", {"email": "blocked@b.example.com"})
    journey = made("/v1/journeys", {"name": "B journey", "steps": journey_steps,
                                    "trigger": {"type": "list_subscribed",
                                                "list_id": lst["id"]}})
    for obj in (contact, lst, template, webhook, domain, campaign, key, journey):
        ids.add(obj["id"])
    ids.add(sub["contact_id"])
    return key_a, ids, {"tenant_a": tenant_a.id, "tenant_b": tenant_b.id, "key_b": key_b,
                        "contact_id": contact["id"], "list_id": lst["id"],
                        "template_id": template["id"], "webhook_id": webhook["id"],
                        "domain_id": domain["id"], "campaign_id": campaign["id"],
                        "key_id": key["id"], "email": "blocked@b.example.com"}


@pytest.fixture(scope="module")
def make_tenant_module(runtime):  # type: ignore[no-untyped-def]
    from swiftmail_core.tenants import create_tenant

    return lambda prefix: create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def api_schema(app):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", app)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def all_ids(tenant_id: uuid.UUID) -> set[str]:
    """Return every object id a tenant has, read under its own tenant_tx."""
    from swiftmail_core.db import tenant_tx

    tables = ("contacts", "lists", "templates", "webhooks", "sending_domains", "campaigns",
              "api_keys", "jobs", "journeys")
    with tenant_tx(tenant_id) as database:
        found = {str(tenant_id)}
        for table in tables:
            found.update(str(row[0]) for row in database.execute_sql(
                f"SELECT id FROM {table}").fetchall())
    return found


def fuzz(api_schema, key: str, victim_ids: set[str], examples: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Fuzz every operation with ``key``; return failures (conformance or a leak)."""
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
            echoed = set(_UUID.findall(case.formatted_path + str(case.query or "")
                                       + str(case.body or "")))
            leaked = (victim_ids - echoed).intersection(_UUID.findall(response.text or ""))
            assert not leaked, f"saw the other tenant's ids {leaked}"

        name = f"{operation.method.upper()} {operation.path}"
        try:
            run()
        except (Exception, BaseExceptionGroup) as ex:
            if name in KNOWN_BROKEN:
                warnings.warn(f"known broken, owned elsewhere: {name}: {ex}", stacklevel=1)
            else:
                failures.append(f"{name}: {ex}"[:2000])
    assert operations >= 40
    return failures


def test_api_conforms_and_never_leaks(api_schema, fuzz_tenants) -> None:  # type: ignore[no-untyped-def]
    """Fuzz as tenant A (B's objects must never show), then as B (A's must never show)."""
    key_a, _, seeded = fuzz_tenants
    failures = fuzz(api_schema, key_a, all_ids(seeded["tenant_b"]), MAX_EXAMPLES)
    assert not failures, "as tenant A:\n" + "\n\n".join(failures)
    # A now holds everything its fuzzing created too: none of it may reach B.
    failures = fuzz(api_schema, seeded["key_b"], all_ids(seeded["tenant_a"]), MAX_EXAMPLES // 2)
    assert not failures, "as tenant B:\n" + "\n\n".join(failures)


def test_every_route_hides_tenant_b_objects(app, fuzz_tenants) -> None:
    """Call every documented operation as A with B's real ids: never 2xx, never B's data."""
    key_a, b_ids, by_param = fuzz_tenants
    client = falcon.testing.TestClient(app)
    document = client.simulate_get("/v1/openapi.json").json
    checked = 0
    for path, item in document["paths"].items():
        names = re.findall(r"\{([^}]+)\}", path)
        if not names:
            continue
        concrete = path
        for name in names:
            # Params of other areas' routes (imports, exports...) get an unknown id.
            value = by_param.get(name, str(uuid.uuid4()))
            concrete = concrete.replace("{" + name + "}", value)
        for method in item:
            result = client.simulate_request(
                method.upper(), concrete, json={} if method in ("post", "patch") else None,
                headers={"Authorization": f"Bearer {key_a}"})
            assert result.status_code in (404, 422), (method, concrete, result.status_code)
            # Echoing the id the caller sent is not a leak; any other B id is.
            echoed = set(_UUID.findall(concrete))
            assert not (b_ids - echoed).intersection(_UUID.findall(result.text)), (
                method, concrete)
            checked += 1
    assert checked >= 30
