"""Idempotency-Key: the work, its reservation and its stored response commit together.

Regressions: ``POST /v1/messages`` committed the ledger row in its own
transaction and stored the response afterwards, so a crash in between left a
reservation without a response; five minutes later a retry took it over and
queued the message a second time. A retry while the first request was still
running past that age did the same.
"""

from __future__ import annotations

import datetime
import threading

import falcon.testing
from swiftmail_web.idempotency import IdempotencyStore

from swiftmail_core.db import tenant_tx
from swiftmail_core.models import IdempotencyKey
from swiftmail_core.sending import lifecycle

MESSAGE = {"to": "once@example.com", "from_email": "app@example.com", "subject": "Hi",
           "text": "Hello"}


def _queued(tenant_id) -> int:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return int(database.execute_sql(
            "SELECT count(*) FROM messages WHERE email = 'once@example.com'").fetchone()[0])


def _age_reservations(tenant_id, minutes: int = 10) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        (IdempotencyKey.update(created_at=IdempotencyKey.created_at
                               - datetime.timedelta(minutes=minutes)).execute())


def test_a_crash_before_the_response_is_stored_never_sends_twice(owner_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": "crash-1"}
    real_record = IdempotencyStore.record

    def crash(self, req, resp):  # type: ignore[no-untyped-def]
        raise RuntimeError("the process died before the response was stored")

    monkeypatch.setattr(IdempotencyStore, "record", crash)
    assert owner_a.post("/v1/messages", MESSAGE, headers=headers).status_code == 500
    monkeypatch.setattr(IdempotencyStore, "record", real_record)
    _age_reservations(owner_a.tenant_id)  # whatever is left is older than ABANDONED
    retried = owner_a.post("/v1/messages", MESSAGE, headers=headers)
    assert retried.status_code == 202
    replayed = owner_a.post("/v1/messages", MESSAGE, headers=headers)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.json == retried.json
    assert _queued(owner_a.tenant_id) == 1


def test_a_repeat_while_the_first_still_runs_never_takes_it_over(app, owner_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    entered, release = threading.Event(), threading.Event()
    real_send = lifecycle.send_transactional

    def slow_send(*args, **kwargs):  # type: ignore[no-untyped-def]
        row = real_send(*args, **kwargs)
        entered.set()
        assert release.wait(30)
        return row

    monkeypatch.setattr(lifecycle, "send_transactional", slow_send)
    statuses: list[int] = []

    def first() -> None:
        client = falcon.testing.TestClient(app)
        statuses.append(client.simulate_post(
            "/v1/messages", json=MESSAGE,
            headers={"Authorization": f"Bearer {owner_a.key}", "Idempotency-Key": "slow-1"},
        ).status_code)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(30)
        _age_reservations(owner_a.tenant_id)  # the first request has run "too long"
        second = owner_a.post("/v1/messages", MESSAGE, headers={"Idempotency-Key": "slow-1"})
        assert second.status_code == 409
    finally:
        release.set()
        thread.join(30)
    assert statuses == [202]
    assert _queued(owner_a.tenant_id) == 1
    replayed = owner_a.post("/v1/messages", MESSAGE, headers={"Idempotency-Key": "slow-1"})
    assert replayed.headers.get("Idempotent-Replayed") == "true"


def test_a_refused_request_is_replayed_and_leaves_no_work(owner_a) -> None:
    headers = {"Idempotency-Key": "refused-1"}
    bad = {**MESSAGE, "template_id": "00000000-0000-0000-0000-000000000000"}
    first = owner_a.post("/v1/messages", bad, headers=headers)
    assert first.status_code == 422
    again = owner_a.post("/v1/messages", bad, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert _queued(owner_a.tenant_id) == 0
