"""Background work on the Citus cluster: imports, exports, webhook deliveries, journey steps.

Each is claimed tenant by tenant through the due-tenant hints (a row lock
works only in a single-shard query on Citus): an import (COPY into a staging
table, merged into contacts), an export, a webhook delivery to a loopback
receiver and a journey step run on the cluster, and the worker's background
round runs without an error.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import uuid
from typing import Any

from swiftmail_core.crypto import encrypt
from swiftmail_core.db import system_tx, tenant_tx
from tests.citus.test_sending import Caller, new_caller
from tests.core.journeys.conftest import email_step
from tests.core.webhooks.test_dispatcher import LOOPBACK, SECRET, Receiver

IMPORTED = 50


def upload(caller: Caller, path: str, body: bytes) -> Any:
    """POST a CSV body as the tenant's owner; return the result."""
    return caller.client.simulate_post(
        path, body=body, headers={**caller.headers, "Content-Type": "text/csv"})


def run_jobs(runtime) -> int:  # type: ignore[no-untyped-def]
    """Run due import/export jobs until none is left (bounded); return how many ran."""
    from swiftmail_core.jobs import run_pending_jobs

    ran = 0
    for _ in range(10):
        done = run_pending_jobs(runtime, limit=10)
        if not done:
            return ran
        ran += done
    raise AssertionError("jobs still due after 10 rounds")


def import_and_export(caller: Caller, runtime) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Import contacts from CSV, then export them; return (import id, export id)."""
    body = "email,name\n" + "".join(f"i{n}@import.example.test,N{n}\n" for n in range(IMPORTED))
    started = upload(caller, "/v1/imports/contacts", body.encode())
    assert started.status_code == 202, started.text
    assert run_jobs(runtime) >= 1
    imported = caller.get(f"/v1/imports/{started.json['id']}").json
    assert (imported["status"], imported["rows_ok"]) == ("succeeded", IMPORTED), imported
    export = caller.post("/v1/exports", {"kind": "contacts"})
    assert export.status_code == 202, export.text
    assert run_jobs(runtime) >= 1
    exported = caller.get(f"/v1/exports/{export.json['id']}").json
    assert exported["status"] == "succeeded", exported
    download = caller.get(f"/v1/exports/{export.json['id']}/download")
    assert download.status_code == 200, download.text
    emails = {row["email"] for row in csv.DictReader(io.StringIO(download.text))}
    assert {f"i{n}@import.example.test" for n in range(IMPORTED)} <= emails
    return started.json["id"], export.json["id"]


def deliver_webhook(caller: Caller, settings, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    """Point a webhook at ``receiver``, record an event, deliver it through the claim."""
    from swiftmail_core.events import EventRecord, record_events
    from swiftmail_core.webhooks.dispatcher import Dispatcher

    with tenant_tx(caller.tenant_id) as database:
        database.execute_sql(
            "INSERT INTO webhooks (tenant_id, id, url, event_types, secret_encrypted) "
            "VALUES (%s, %s, %s, '{}', %s)",
            (str(caller.tenant_id), str(uuid.uuid4()), receiver.url,
             encrypt(settings.secret_key, SECRET.encode())))
    assert record_events([EventRecord(caller.tenant_id, "opened", email="w@hook.example.test")])
    dispatcher = Dispatcher(settings.secret_key, LOOPBACK, timeout=10)
    assert dispatcher.deliver_due() >= 1
    assert len(receiver.deliveries) == 1
    with tenant_tx(caller.tenant_id) as database:
        assert database.execute_sql(
            "SELECT status FROM webhook_deliveries WHERE tenant_id = %s",
            (str(caller.tenant_id),)).fetchall() == [("succeeded",)]


def run_journey_step(caller: Caller) -> None:
    """Enroll a contact in a journey through the API and run its first step."""
    from swiftmail_core.journeys import runner

    steps = [email_step("welcome"), {"id": "pause", "type": "wait", "seconds": 86400}]
    made = caller.post("/v1/journeys", {"name": "Welcome", "steps": steps,
                                        "trigger": {"type": "event", "name": "signup"}})
    assert made.status_code == 201, made.text
    assert caller.post(f"/v1/journeys/{made.json['id']}/activate").status_code == 200
    fired = caller.post("/v1/events", {"name": "signup", "email": "j@journey.example.test"})
    assert fired.json["journey_ids"] == [made.json["id"]], fired.text
    assert runner.run_due(owner="citus-journeys", max_seconds=30) == 1
    with system_tx() as database:
        mail = database.execute_sql(
            "UPDATE messages SET status = 'cancelled' WHERE tenant_id = %s AND kind = 'journey' "
            "AND status = 'queued' RETURNING payload ->> 'step_id'",
            (str(caller.tenant_id),)).fetchall()
    assert mail == [("welcome",)]  # cancelled: no later test's worker sends it


def run_background_work(caller: Caller, settings, runtime) -> None:  # type: ignore[no-untyped-def]
    """An import and an export, a webhook delivery and a journey step for ``caller``."""
    import_and_export(caller, runtime)
    receiver = Receiver()
    try:
        deliver_webhook(caller, settings, receiver)
    finally:
        receiver.close()
    run_journey_step(caller)


def test_imports_exports_webhooks_and_journeys_run_on_the_cluster(  # type: ignore[no-untyped-def]
        cluster_app, citus_runtime) -> None:
    settings, _, client, _ = cluster_app
    run_background_work(new_caller(client, "background"), settings, citus_runtime)


def test_the_background_round_logs_no_error_on_the_cluster(  # type: ignore[no-untyped-def]
        cluster_app, caplog) -> None:
    from swiftmail_core.sending.worker import SendingQueue

    settings, plugins, client, _ = cluster_app
    caller = new_caller(client, "round")
    # Something due in each queue: a job, a webhook delivery (refused: not loopback-allowed
    # here, so it is retried later) and a journey position.
    assert upload(caller, "/v1/imports/contacts", b"email\nr@round.example.test\n"
                  ).status_code == 202
    made = caller.post("/v1/journeys", {"name": "W", "steps": [
        {"id": "pause", "type": "wait", "seconds": 86400}],
        "trigger": {"type": "event", "name": "signup"}}).json["id"]
    caller.post(f"/v1/journeys/{made}/activate")
    assert caller.post("/v1/events", {"name": "signup", "email": "e@round.example.test"}
                       ).json["journey_ids"] == [made]
    queue = SendingQueue(settings, plugins)
    with caplog.at_level(logging.ERROR):
        done = queue.run_background()
        queue._background_round()
    assert done["jobs"] >= 1 and done["journey_enrollments"] >= 1, done
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


def test_a_failed_then_successful_webhook_delivery_is_recorded_on_the_cluster(  # type: ignore[no-untyped-def]
        cluster_app) -> None:
    """The webhook row counts a failure and pauses, then a success resets it.

    Regression: the failure's pause was ``now() + <interval of a column>`` in an
    UPDATE, which Citus refuses (a STABLE operator with column references).
    """
    from swiftmail_core.events import EventRecord, record_events
    from swiftmail_core.webhooks.dispatcher import Dispatcher
    from swiftmail_core.webhooks.leases import WEBHOOKS

    settings, _, client, _ = cluster_app
    caller = new_caller(client, "webhook-result")
    tenant, webhook = str(caller.tenant_id), str(uuid.uuid4())
    receiver = Receiver(statuses=[500])
    try:
        with tenant_tx(caller.tenant_id) as database:
            database.execute_sql(
                "INSERT INTO webhooks (tenant_id, id, url, event_types, secret_encrypted) "
                "VALUES (%s, %s, %s, '{}', %s)",
                (tenant, webhook, receiver.url, encrypt(settings.secret_key, SECRET.encode())))
        assert record_events([EventRecord(caller.tenant_id, "opened", email="r@hook.example.test")])
        dispatcher = Dispatcher(settings.secret_key, LOOPBACK, timeout=10)

        def row() -> tuple[Any, ...]:
            with tenant_tx(caller.tenant_id) as database:
                return database.execute_sql(
                    "SELECT w.consecutive_failures, w.paused_until > now(), d.status, d.attempts "
                    "FROM webhooks w JOIN webhook_deliveries d "
                    "ON d.tenant_id = w.tenant_id AND d.webhook_id = w.id "
                    "WHERE w.tenant_id = %s AND w.id = %s", (tenant, webhook)).fetchone()

        assert dispatcher.deliver_due() >= 1
        assert len(receiver.deliveries) == 1
        assert row() == (1, True, "pending", 1)
        with tenant_tx(caller.tenant_id) as database:  # the retry is due now
            database.execute_sql(
                "UPDATE webhooks SET paused_until = NULL WHERE tenant_id = %s AND id = %s",
                (tenant, webhook))
            database.execute_sql(
                "UPDATE webhook_deliveries SET next_attempt_at = %s "
                "WHERE tenant_id = %s AND webhook_id = %s",
                (datetime.datetime.now(datetime.UTC), tenant, webhook))
        with system_tx() as database:
            WEBHOOKS.mark_due(database, tenant)
        assert dispatcher.deliver_due() >= 1
        assert len(receiver.deliveries) == 2
        assert row() == (0, None, "succeeded", 2)
    finally:
        receiver.close()
