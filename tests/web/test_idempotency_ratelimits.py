"""Idempotency-Key replays and per-tenant / per-key rate limits."""

from __future__ import annotations

import threading
import uuid

import falcon.testing
import pytest
from swiftmail_web.app import create_app
from swiftmail_web.config import WebConfig

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Contact, IdempotencyKey, utcnow


def test_same_key_same_body_replays(owner_a) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = owner_a.post("/v1/contacts", {"email": "i@example.com"}, headers=headers)
    second = owner_a.post("/v1/contacts", {"email": "i@example.com"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    with tenant_tx(owner_a.tenant_id):
        assert Contact.select().count() == 1


def test_same_key_different_body_is_422(owner_a) -> None:
    headers = {"Idempotency-Key": "k-2"}
    owner_a.post("/v1/contacts", {"email": "j@example.com"}, headers=headers)
    other = owner_a.post("/v1/contacts", {"email": "k@example.com"}, headers=headers)
    assert other.status_code == 422
    assert other.json["errors"][0]["field"] == "Idempotency-Key"


def test_errors_replay_too_and_keys_are_per_tenant(owner_a, owner_b) -> None:
    headers = {"Idempotency-Key": "shared"}
    bad = owner_a.post("/v1/contacts", {"email": "nope"}, headers=headers)
    assert bad.status_code == 422
    assert owner_a.post("/v1/contacts", {"email": "nope"}, headers=headers).headers[
        "Idempotent-Replayed"] == "true"
    # Tenant B's same key is independent.
    assert owner_b.post("/v1/contacts", {"email": "b@example.com"},
                        headers=headers).status_code == 201


def test_expired_key_runs_again(owner_a) -> None:
    headers = {"Idempotency-Key": "old"}
    owner_a.post("/v1/lists", {"name": "L1"}, headers=headers)
    with tenant_tx(owner_a.tenant_id):
        IdempotencyKey.update(expires_at=utcnow()).where(IdempotencyKey.key == "old").execute()
    again = owner_a.post("/v1/lists", {"name": "L1"}, headers=headers)
    assert again.status_code == 409  # ran again: the name now exists
    assert "Idempotent-Replayed" not in again.headers


def test_in_flight_key_is_409(owner_a) -> None:
    import hashlib

    from swiftmail_core.apikeys import authenticate_key

    body = b'{"name": "B"}'
    principal = authenticate_key(owner_a.key)
    caller = f"{principal.key_id}||{principal.role}|"  # the caller is part of the fingerprint
    digest = hashlib.sha256()
    for part in (caller, "POST", "/v1/lists", ""):
        digest.update(part.encode() + b"\x00")
    digest.update(body)
    with tenant_tx(owner_a.tenant_id):
        IdempotencyKey.insert(tenant_id=owner_a.tenant_id, key="busy",
                              request_hash=digest.digest(), method="POST", path="/v1/lists",
                              created_at=utcnow(), expires_at=utcnow().replace(year=2100)).execute()
    result = owner_a.client.simulate_post("/v1/lists", body=body, headers={
        "Authorization": f"Bearer {owner_a.key}", "Idempotency-Key": "busy",
        "Content-Type": "application/json"})
    assert result.status_code == 409
    assert "in progress" in result.json["detail"]


def test_concurrent_requests_create_once(app, owner_a) -> None:
    results: list[int] = []
    barrier = threading.Barrier(6)

    def call() -> None:
        client = falcon.testing.TestClient(app)
        barrier.wait()
        results.append(client.simulate_post(
            "/v1/contacts", json={"email": "race@example.com"},
            headers={"Authorization": f"Bearer {owner_a.key}", "Idempotency-Key": "race"},
        ).status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 201 in results
    assert set(results) <= {201, 409}
    with tenant_tx(owner_a.tenant_id):
        assert Contact.select().where(Contact.email_lower == "race@example.com").count() == 1


def test_bad_idempotency_key_is_422(owner_a) -> None:
    result = owner_a.post("/v1/lists", {"name": "x"}, headers={"Idempotency-Key": "a" * 300})
    assert result.status_code == 422


@pytest.fixture
def limited_app(runtime, settings, redis_url, run_id):  # type: ignore[no-untyped-def]
    import redis

    prefix = f"swiftmail-test-{run_id}-{uuid.uuid4().hex[:6]}:"
    config = WebConfig(redis_prefix=prefix, rate_limit_per_tenant=5, rate_limit_per_key=3)
    client = redis.Redis.from_url(redis_url)
    yield create_app(settings, runtime.plugins, redis_client=client, config=config)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)


def test_rate_limits_per_key_and_tenant(limited_app, make_caller, tenant_a, tenant_b) -> None:
    client = falcon.testing.TestClient(limited_app)
    key1, key2 = make_caller(tenant_a).key, make_caller(tenant_a).key
    other = make_caller(tenant_b).key

    def get(key: str) -> falcon.testing.Result:
        return client.simulate_get("/v1/lists", headers={"Authorization": f"Bearer {key}"})

    first = get(key1)
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "3"
    assert first.headers["RateLimit-Remaining"] == "2"
    get(key1)
    get(key1)
    limited = get(key1)
    # A minute boundary may fall between calls; then the counter restarted.
    if limited.status_code == 429:
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["Content-Type"] == "application/problem+json"
        assert limited.json["type"].endswith("/rate-limited")
        # The tenant budget (5) is now spent by key2 too, but tenant B is untouched.
        get(key2)
        assert get(key2).status_code == 429
        assert get(other).status_code == 200


def test_sweep_removes_only_expired_keys(owner_a, owner_b) -> None:
    from swiftmail_web.idempotency import IdempotencyStore, sweep_expired

    owner_a.post("/v1/lists", {"name": "S1"}, headers={"Idempotency-Key": "stale"})
    owner_b.post("/v1/lists", {"name": "S2"}, headers={"Idempotency-Key": "stale"})
    owner_a.post("/v1/lists", {"name": "S3"}, headers={"Idempotency-Key": "fresh"})
    for caller in (owner_a, owner_b):
        with tenant_tx(caller.tenant_id):
            IdempotencyKey.update(expires_at=utcnow()).where(
                IdempotencyKey.key == "stale").execute()
    assert sweep_expired() >= 2
    with tenant_tx(owner_a.tenant_id):
        assert [k.key for k in IdempotencyKey.select()] == ["fresh"]
    ticks = iter([0.0, 1000.0, 1000.0, 1000.0])
    store = IdempotencyStore(sweep_every=600.0, clock=lambda: next(ticks))
    store._maybe_sweep()  # at t=1000 it is due, runs, and schedules the next
    assert store._next_sweep == 1600.0


def test_response_commits_with_the_work(app, owner_a, monkeypatch) -> None:
    """With the middleware's transaction, the stored response is written before COMMIT."""
    from swiftmail_web.idempotency import IdempotencyStore

    # Simulate the process dying right after COMMIT: the separate store never runs.
    monkeypatch.setattr(IdempotencyStore, "finish", lambda self, req, resp: None)
    result = owner_a.post("/v1/contacts", {"email": "atomic@example.com"},
                          headers={"Idempotency-Key": "atomic"})
    assert result.status_code == 201
    with tenant_tx(owner_a.tenant_id):
        row = IdempotencyKey.get(IdempotencyKey.key == "atomic")
        assert row.response_status == 201
        assert bytes(row.response_body) == result.content


def test_failed_store_rolls_back_and_frees_the_thread(app, owner_a, monkeypatch) -> None:
    from swiftmail_web.idempotency import IdempotencyStore

    def broken(self, req, resp):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(IdempotencyStore, "record", broken)
    failed = owner_a.post("/v1/contacts", {"email": "gone@example.com"},
                          headers={"Idempotency-Key": "broken"})
    assert failed.status_code == 500
    monkeypatch.undo()
    # The work was rolled back, the key released, and this thread is usable.
    assert owner_a.get("/v1/contacts", params={"email": "gone@example.com"}).json["data"] == []
    again = owner_a.post("/v1/contacts", {"email": "gone@example.com"},
                         headers={"Idempotency-Key": "broken"})
    assert again.status_code == 201


def test_a_stored_response_replays_only_to_the_same_caller(owner_a, make_caller, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: an admin replaying an owner's POST /v1/api-keys (same key, same body)
    # received the owner's new plaintext API key.
    body = {"name": "ci", "role": "viewer"}
    headers = {"Idempotency-Key": "replay-by-someone-else"}
    first = owner_a.post("/v1/api-keys", body, headers=headers)
    assert first.status_code == 201, first.text
    admin = make_caller(tenant_a, "admin")
    replay = admin.post("/v1/api-keys", body, headers=headers)
    assert replay.status_code == 422 and "another caller" in replay.json["detail"]
    assert first.json["key"] not in replay.text
    narrow = make_caller(tenant_a, "owner", scopes=("api_keys:write", "api_keys:read"))
    assert narrow.post("/v1/api-keys", body, headers=headers).status_code == 422


def test_secrets_are_not_stored_for_replays(owner_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: idempotency_keys.response_body held full API keys and webhook secrets.
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.models import IdempotencyKey

    headers = {"Idempotency-Key": "no-secret-stored"}
    first = owner_a.post("/v1/api-keys", {"name": "n", "role": "viewer"}, headers=headers)
    assert first.status_code == 201 and first.json["key"].startswith("sm_live_")
    with tenant_tx(owner_a.tenant_id):
        stored = bytes(IdempotencyKey.get(IdempotencyKey.key == "no-secret-stored").response_body)
    assert first.json["key"].encode() not in stored
    replay = owner_a.post("/v1/api-keys", {"name": "n", "role": "viewer"}, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json["id"] == first.json["id"] and "key" not in replay.json
