"""The platform intake: only the platform's signature, bounded, durable before 200."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import urllib3
from swiftmail_relay import spool as spool_module
from swiftmail_relay.intake_wire import encode_batch
from swiftmail_relay.platform_auth import (
    SIGNATURE_HEADER,
    RedisReplayGuard,
    platform_secrets,
    sign_request,
)
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id

from swiftmail_core import redis_clients
from swiftmail_core.webhooks.signing import sign_payload
from tests.relay.intake_helpers import IntakeThread

TENANT = uuid.UUID("11111111-2222-3333-4444-555555555555")
CAMPAIGN = uuid.UUID("66666666-7777-8888-9999-000000000000")
RAW = (b"From: News <news@sender.test>\r\nTo: a@example.test\r\nSubject: Hi\r\n"
       b"Message-ID: <1@sender.test>\r\n\r\nHello\r\n")


def _batch(count: int = 2, tenant: uuid.UUID = TENANT, first_ledger: int = 100) -> bytes:
    items = []
    for index in range(count):
        envelope = Envelope(
            id=new_id(), mail_from="bounces@sender.test",
            recipients=[Recipient(f"user{index}@example.test", ledger_id=first_ledger + index)],
            tenant_id=str(tenant), campaign_id=str(CAMPAIGN),
            warmup_plan={"start_per_hour": 50})
        items.append((envelope, RAW))
    return encode_batch(items)


def _post(url: str, body: bytes, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
    return urllib3.request("POST", url, body=body, retries=False, timeout=10,
                           headers={"Content-Type": "application/json", **headers})


@pytest.fixture
def intake(settings, tmp_path):  # type: ignore[no-untyped-def]
    with IntakeThread(settings, tmp_path / "spool") as running:
        yield running


def _signed(settings, body: bytes) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {SIGNATURE_HEADER: sign_request(platform_secrets(settings), body)}


def test_a_signed_batch_is_spooled_with_its_ids(settings, intake) -> None:  # type: ignore[no-untyped-def]
    body = _batch(3)
    response = _post(intake.url, body, _signed(settings, body))
    assert response.status == 200, response.data
    queue_ids = json.loads(response.data)["queue_ids"]
    assert len(queue_ids) == 3 and intake.notified == queue_ids
    spooled = [intake.spool.read(queue_id) for queue_id in queue_ids]
    assert [env.recipients[0].ledger_id for env, _ in spooled] == [100, 101, 102]
    assert all(env.tenant_id == str(TENANT) and env.campaign_id == str(CAMPAIGN)
               and env.source == "intake" and env.sender_domain == "sender.test"
               and env.warmup_plan == {"start_per_hour": 50} and raw == RAW
               for env, raw in spooled)


def test_a_resent_batch_is_answered_without_spooling_it_twice(settings, intake) -> None:  # type: ignore[no-untyped-def]
    # A worker that lost the answer sends the same ledger rows again (a new request):
    # 200, the first copies' queue ids, listed as repeats, nothing spooled or woken twice.
    first = _batch(2)
    spooled = json.loads(_post(intake.url, first, _signed(settings, first)).data)["queue_ids"]
    again = _batch(3)  # ledger ids 100, 101 again, and 102 new
    response = _post(intake.url, again, _signed(settings, again))
    assert response.status == 200, response.data
    answer = json.loads(response.data)
    assert answer["queue_ids"][:2] == spooled and answer["repeats"] == [0, 1]
    assert sorted(intake.spool.scan()) == sorted([*spooled, answer["queue_ids"][2]])
    assert intake.notified == [*spooled, answer["queue_ids"][2]]


def test_unsigned_wrong_or_stale_signatures_are_refused(settings, intake) -> None:  # type: ignore[no-untyped-def]
    body = _batch()
    wrong = sign_payload(b"not-the-platform-secret-" + b"x" * 16, body)
    stale = sign_request(platform_secrets(settings), body, int(time.time()) - 3600)
    for headers in ({}, {SIGNATURE_HEADER: wrong}, {SIGNATURE_HEADER: stale},
                    {SIGNATURE_HEADER: "t=1,v1=00"}):
        response = _post(intake.url, body, headers)
        assert response.status == 401, headers
        problem = json.loads(response.data)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert problem["type"].endswith("/unauthenticated") and "platform secret" in problem["detail"]
    assert list(intake.spool.scan()) == []


def test_a_tenant_credential_cannot_claim_ledger_rows(settings, runtime, tenant_a, tenant_b,
                                                      intake) -> None:  # type: ignore[no-untyped-def]
    # APPSEC: a tenant's API key names no tenant's ledger rows here, not even its own.
    from swiftmail_core.apikeys import create_api_key

    key = create_api_key(tenant_a.id, role="owner").key
    body = _batch(1, tenant=tenant_b.id, first_ledger=7)
    for headers in ({"Authorization": f"Bearer {key}"},
                    {"Authorization": f"Bearer {key}", SIGNATURE_HEADER: sign_payload(key, body)},
                    {SIGNATURE_HEADER: sign_payload(key, body)}):
        assert _post(intake.url, body, headers).status == 401
    assert list(intake.spool.scan()) == []


def test_a_replayed_request_is_refused(settings, intake) -> None:  # type: ignore[no-untyped-def]
    body = _batch(1)
    headers = _signed(settings, body)
    assert _post(intake.url, body, headers).status == 200
    replayed = _post(intake.url, body, headers)
    assert replayed.status == 401 and "replay" in json.loads(replayed.data)["detail"]
    # Appending another v1= to a captured header does not make it new.
    padded = {SIGNATURE_HEADER: headers[SIGNATURE_HEADER] + ",v1=00"}
    assert _post(intake.url, body, padded).status == 401
    assert len(list(intake.spool.scan())) == 1


def test_bodies_are_bounded_and_fields_named(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with IntakeThread(settings, tmp_path / "spool", intake_max_body=4096) as small:
        body = _batch(40)
        too_large = _post(small.url, body, _signed(settings, body))
        assert too_large.status == 413
        bad = json.loads(_batch(1))
        bad["messages"][0]["recipients"][0]["address"] = "not an address"
        body = json.dumps(bad).encode()
        invalid = _post(small.url, body, _signed(settings, body))
        assert invalid.status == 422
        assert json.loads(invalid.data)["errors"][0]["field"] == \
            "messages[0].recipients[0].address"
        assert list(small.spool.scan()) == []


def test_no_200_before_the_batch_is_durable(settings, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A directory fsync that fails means nothing was accepted: 503, nothing kept.
    def failing_fsync(path):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    with IntakeThread(settings, tmp_path / "spool") as running:
        monkeypatch.setattr(spool_module, "_fsync_dir", failing_fsync)
        body = _batch(2)
        refused = _post(running.url, body, _signed(settings, body))
        assert refused.status == 503 and refused.headers["Retry-After"]
        assert list(running.spool.scan()) == [] and running.notified == []
        monkeypatch.undo()
        body = _batch(2)
        accepted = _post(running.url, body, _signed(settings, body))
        assert accepted.status == 200
        # Every id in the answer is already a complete file in queue/.
        fresh = Spool(tmp_path / "spool")
        for queue_id in json.loads(accepted.data)["queue_ids"]:
            assert fresh.read(queue_id)[1] == RAW


def test_healthz_says_whether_the_spool_takes_mail(intake) -> None:  # type: ignore[no-untyped-def]
    response = urllib3.request("GET", intake.url.replace("/v1/spool", "/healthz"), timeout=10)
    assert response.status == 200
    assert json.loads(response.data) == {"spool_writable": True, "delivering": False}


def test_a_request_the_spool_refused_may_be_sent_again(settings, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A 503 kept nothing, so the worker hands the same signed request to the next
    # relay (the replay memory is shared through Redis): it must not count as a replay.
    def failing_fsync(path):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    with IntakeThread(settings, tmp_path / "spool") as running:
        monkeypatch.setattr(spool_module, "_fsync_dir", failing_fsync)
        body = _batch(1)
        headers = _signed(settings, body)
        assert _post(running.url, body, headers).status == 503
        monkeypatch.undo()
        again = _post(running.url, body, headers)
        assert again.status == 200, again.data
        assert _post(running.url, body, headers).status == 401  # now it is a replay
        assert len(list(running.spool.scan())) == 1


def test_the_shared_replay_memory_refuses_a_replay_and_forgets_on_request(settings) -> None:  # type: ignore[no-untyped-def]
    async def run() -> list[bool]:
        client = redis_clients.async_client(settings)
        guard = RedisReplayGuard(client, f"test-{uuid.uuid4().hex}")
        try:
            seen = [await guard.first_use("digest", 30), await guard.first_use("digest", 30)]
            await guard.forget("digest")
            return [*seen, await guard.first_use("digest", 30)]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [True, False, True]


def test_a_durable_batch_is_answered_200_even_when_the_wake_up_fails(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A 5xx after the spool write would send the worker to the next relay: mail twice.
    running = IntakeThread(settings, tmp_path / "spool")

    def broken_notify(queue_ids):  # type: ignore[no-untyped-def]
        raise RuntimeError("the engine is gone")

    running._notify = broken_notify  # type: ignore[method-assign]
    with running:
        body = _batch(2)
        answer = _post(running.url, body, _signed(settings, body))
        assert answer.status == 200, answer.data
        assert sorted(json.loads(answer.data)["queue_ids"]) == sorted(running.spool.scan())
