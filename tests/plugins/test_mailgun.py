"""The mailgun transport against the stand-in, and its HMAC-signed webhooks."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
import uuid

import falcon
import falcon.testing
from swiftmail_plugins.mailgun import EventWebhook, MailgunTransport

from swiftmail_core.db import tenant_tx
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.transports import OutboundMessage, Outcome
from tests.core.sending.conftest import (
    add_subscribers,
    make_campaign,
    make_list,
    park_other_tenants_work,
)


def _raw(recipient: str, html: str = "<p>same</p>") -> bytes:
    return (f"From: Shop <shop@sender.test>\r\nTo: {recipient}\r\nSubject: Hi\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
            f"{html}\r\n").encode()


def _transport(standin) -> MailgunTransport:  # type: ignore[no-untyped-def]
    return MailgunTransport({"api_key": "key-test", "domain": "mg.sender.test",
                             "base_url": standin.base_url})


def test_recipient_variables_batch_and_failures(mailgun_standin) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    messages = [OutboundMessage(i, tenant, "b@x", f"r{i}@x.test", _raw(f"r{i}@x.test"), f"<{i}@x>")
                for i in range(1, 5)]
    results = _transport(mailgun_standin).send(messages)
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert mailgun_standin.requests == 1
    assert {a["to"]: a["user_variables"]["swiftmail_ledger"] for a in mailgun_standin.accepted} == {
        f"r{i}@x.test": str(i) for i in range(1, 5)}
    mailgun_standin.force(429, {"Retry-After": "3"}, b'{"message":"slow down"}')
    deferred = _transport(mailgun_standin).send(messages[:1])[0]
    assert deferred.outcome is Outcome.DEFERRED and deferred.retry_after.total_seconds() == 3
    mailgun_standin.force(503, body=b"unavailable")
    assert _transport(mailgun_standin).send(messages[:1])[0].outcome is Outcome.DEFERRED
    mailgun_standin.force(400, body=b'{"message":"bad"}')
    assert _transport(mailgun_standin).send(messages[:1])[0].outcome is Outcome.REJECTED


def test_campaign_through_mailgun_and_signed_webhook(  # type: ignore[no-untyped-def]
    settings, runtime, tenant_a, mailgun_standin
) -> None:
    first, second = make_list(tenant_a.id), make_list(tenant_a.id)
    add_subscribers(tenant_a.id, first, 15, start=0)
    add_subscribers(tenant_a.id, second, 15, start=5)
    campaign_id = make_campaign(tenant_a.id, [first, second], transport="mailgun")
    configured = dataclasses.replace(settings, send_retry_base_seconds=0, plugins={"mailgun": {
        "api_key": "key-test", "domain": "mg.sender.test", "base_url": mailgun_standin.base_url}})
    plugins = PluginManager.load(configured)
    worker = SendingWorker(configured, plugins)
    park_other_tenants_work(tenant_a.id)  # the claim is cross-tenant
    mailgun_standin.force(500, times=2)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    for _ in range(20):
        sweeper.tick(configured, plugins)
        worker.drain(30)
        if not sweeper.has_due_work():
            break
        time.sleep(0.05)
    assert sorted(a["to"] for a in mailgun_standin.accepted) == sorted(
        f"user{i}@example.test" for i in range(20))
    subjects = {a["to"]: a["subject"] for a in mailgun_standin.accepted}
    assert subjects["user3@example.test"] == "Hello First3"

    variables = {a["to"]: a["user_variables"] for a in mailgun_standin.accepted}
    app = falcon.App()
    app.add_route("/hooks/mailgun/events", EventWebhook({"webhook_signing_key": "whsec"}))
    client = falcon.testing.TestClient(app)

    def post(event: dict, key: str = "whsec", token: str | None = None):  # type: ignore[no-untyped-def]
        timestamp, token = str(int(time.time())), token or uuid.uuid4().hex
        signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        return client.simulate_post("/hooks/mailgun/events", json={
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event})

    complaint = {"event": "complained", "id": "ev1", "recipient": "user4@example.test",
                 "timestamp": time.time(), "user-variables": variables["user4@example.test"]}
    assert post(complaint, key="wrong").status_code == 401
    assert post(complaint).status_code == 200
    bounce = {"event": "failed", "severity": "permanent", "id": "ev2",
              "recipient": "user5@example.test", "timestamp": time.time(),
              "delivery-status": {"code": 550, "message": "no such user"},
              "user-variables": variables["user5@example.test"]}
    assert post(bounce, token="t-1").status_code == 200
    assert post(bounce, token="t-1").status_code == 401  # a replayed token
    with tenant_tx(tenant_a.id) as database:
        reasons = dict(database.execute_sql(
            "SELECT email_lower, reason FROM suppressions").fetchall())
        status = database.execute_sql(
            "SELECT status FROM messages WHERE campaign_id = %s AND email = 'user5@example.test'",
            (str(campaign_id),)).fetchone()[0]
    assert reasons == {"user4@example.test": "complaint", "user5@example.test": "hard_bounce"}
    assert status == "bounced"


def test_webhook_routes_are_registered_in_the_real_app(settings, runtime) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_web.app import create_app

    app = create_app(settings, PluginManager.load(settings))
    client = falcon.testing.TestClient(app)
    for path in ("/hooks/sendgrid/events", "/hooks/mailgun/events"):
        response = client.simulate_post(path, json={"signature": {}, "event-data": {}})
        assert response.status_code in (400, 401), (path, response.status_code)
