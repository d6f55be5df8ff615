"""Hostile or odd input gets a clear 4xx problem+json naming the problem, never a 500."""

from __future__ import annotations

import pytest


def _problem(result, status: int = 422) -> dict:  # type: ignore[no-untyped-def]
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/problem+json")
    return result.json


def _raw_post(caller, path: str, body: bytes):  # type: ignore[no-untyped-def]
    return caller.client.simulate_post(
        path, body=body, headers={"Authorization": f"Bearer {caller.key}",
                                  "Content-Type": "application/json"})


def test_deeply_nested_json_is_a_422(owner_a) -> None:
    body = b'{"name": "x", "attributes": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    problem = _problem(_raw_post(owner_a, "/v1/lists", body))
    assert "nested" in problem["detail"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_are_a_422(owner_a, literal: bytes) -> None:
    problem = _problem(_raw_post(owner_a, "/v1/contacts",
                                 b'{"email": "n@example.com", "attributes": {"x": ' + literal
                                 + b"}}"))
    assert problem["errors"][0]["field"] == "body"


def test_lone_surrogates_are_a_422(owner_a) -> None:
    problem = _problem(_raw_post(owner_a, "/v1/lists", b'{"name": "bad \\ud800 name"}'))
    assert "surrogate" in problem["detail"]


def test_time_zone_offset_out_of_range_is_a_422(owner_a) -> None:
    made = owner_a.post("/v1/campaigns", {"name": "tz"})
    assert made.status_code == 201, made.text
    result = owner_a.post(f"/v1/campaigns/{made.json['id']}/schedule",
                          {"send_at": "2030-01-01T09:00:00+23:00"})
    problem = _problem(result)
    assert problem["errors"][0]["field"] == "send_at"


def test_unknown_route_gets_a_helpful_problem(owner_a) -> None:
    problem = _problem(owner_a.get("/v1/contact"), 404)
    assert "/v1/openapi.json" in problem["detail"]
    assert "did you mean /v1/contacts?" in problem["detail"]


def test_unknown_query_parameter_is_named(owner_a) -> None:
    problem = _problem(owner_a.get("/v1/contacts", params={"limt": "5"}), 400)
    assert "limt" in problem["detail"]
