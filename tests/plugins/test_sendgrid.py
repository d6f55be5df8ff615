"""The sendgrid transport against the validating stand-in, and its Event Webhook."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid

import falcon
import falcon.testing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from swiftmail_plugins.sendgrid import EventWebhook, SendGridTransport

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


def _raw(recipient: str, subject: str = "Hi", html: str = "<p>same</p>") -> bytes:
    return (f"From: Shop <shop@sender.test>\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
            "List-Unsubscribe: <https://x.test/u/1>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nsame\r\n--b\r\nContent-Type: text/html\r\n\r\n"
            f"{html}\r\n--b--\r\n").encode()


def _messages(count: int, **kwargs) -> list[OutboundMessage]:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    return [OutboundMessage(i, tenant, "b@sender.test", f"r{i}@x.test", _raw(f"r{i}@x.test", **kwargs),
                            f"<{i}@x>") for i in range(1, count + 1)]


def test_identical_content_batches_into_personalizations(sendgrid_standin) -> None:  # type: ignore[no-untyped-def]
    transport = SendGridTransport({"api_key": "SG.test-key", "base_url": sendgrid_standin.base_url})
    results = transport.send(_messages(5))
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert sendgrid_standin.requests == 1 and len(sendgrid_standin.accepted) == 5
    assert sendgrid_standin.invalid == []
    assert sendgrid_standin.accepted[0]["custom_args"]["swiftmail_ledger"] == "1"


def test_personalised_content_is_one_request_each(sendgrid_standin) -> None:  # type: ignore[no-untyped-def]
    transport = SendGridTransport({"api_key": "SG.test-key", "base_url": sendgrid_standin.base_url})
    messages = [dataclasses.replace(m, raw=_raw(m.recipient, html=f"<p>{m.recipient}</p>"))
                for m in _messages(3)]
    assert {r.outcome for r in transport.send(messages)} == {Outcome.ACCEPTED}
    assert sendgrid_standin.requests == 3


def test_429_500_401_400_map_to_deferred_and_rejected(sendgrid_standin) -> None:  # type: ignore[no-untyped-def]
    transport = SendGridTransport({"api_key": "SG.test-key", "base_url": sendgrid_standin.base_url})
    sendgrid_standin.force(429, {"Retry-After": "7"}, b'{"errors":[{"message":"too many"}]}')
    (result,) = transport.send(_messages(1))
    assert result.outcome is Outcome.DEFERRED and result.retry_after.total_seconds() == 7
    sendgrid_standin.force(500, body=b'{"errors":[{"message":"oops"}]}')
    assert transport.send(_messages(1))[0].outcome is Outcome.DEFERRED
    bad_key = SendGridTransport({"api_key": "wrong", "base_url": sendgrid_standin.base_url})
    assert bad_key.send(_messages(1))[0].outcome is Outcome.DEFERRED
    sendgrid_standin.force(400, body=b'{"errors":[{"message":"bad"}]}')
    rejected = transport.send(_messages(1))[0]
    assert rejected.outcome is Outcome.REJECTED and "400" in rejected.reason


def test_standin_refuses_a_body_the_spec_refuses(sendgrid_standin) -> None:  # type: ignore[no-untyped-def]
    status, _, body = sendgrid_standin.answer(
        "/v3/mail/send", {"Authorization": "Bearer SG.test-key"},
        json.dumps({"personalizations": [{"to": [{"name": "no email"}]}]}).encode())
    assert status == 400 and b"from" in body


def test_campaign_through_sendgrid_with_429_then_webhook(  # type: ignore[no-untyped-def]
    settings, runtime, tenant_a, sendgrid_standin
) -> None:
    first, second = make_list(tenant_a.id), make_list(tenant_a.id)
    add_subscribers(tenant_a.id, first, 20, start=0)
    add_subscribers(tenant_a.id, second, 20, start=10)
    campaign_id = make_campaign(tenant_a.id, [first, second], transport="sendgrid")
    configured = dataclasses.replace(
        settings, send_retry_base_seconds=0,
        plugins={"sendgrid": {"api_key": "SG.test-key", "base_url": sendgrid_standin.base_url}})
    plugins = PluginManager.load(configured)
    worker = SendingWorker(configured, plugins)
    park_other_tenants_work(tenant_a.id)  # the claim is cross-tenant
    sendgrid_standin.force(429, {"Retry-After": "0"}, times=3)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    for _ in range(20):
        sweeper.tick(configured, plugins)
        worker.drain(30)
        if not sweeper.has_due_work():
            break
        time.sleep(0.05)
    sweeper.tick(configured, plugins)
    assert len({a["to"] for a in sendgrid_standin.accepted}) == 30
    assert len(sendgrid_standin.accepted) == 30 and sendgrid_standin.invalid == []
    first_names = {a["to"]: a["subject"] for a in sendgrid_standin.accepted}
    assert first_names["user12@example.test"] == "Hello First12"

    # The signed Event Webhook: a delivery and a hard bounce come back.
    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    by_email = {a["to"]: a["custom_args"] for a in sendgrid_standin.accepted}
    events = [
        {"email": "user1@example.test", "event": "delivered", "sg_event_id": "e1",
         "timestamp": int(time.time()), **by_email["user1@example.test"]},
        {"email": "user2@example.test", "event": "bounce", "status": "5.1.1", "sg_event_id": "e2",
         "timestamp": int(time.time()), **by_email["user2@example.test"]},
        {"email": "someone@else.test", "event": "delivered", "sg_event_id": "e3",
         "timestamp": int(time.time()), **by_email["user3@example.test"]},  # wrong address
    ]
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    signature = base64.b64encode(private.sign(timestamp.encode() + body,
                                              ec.ECDSA(hashes.SHA256()))).decode()
    app = falcon.App()
    app.add_route("/hooks/sendgrid/events", EventWebhook({"webhook_public_key": public}))
    client = falcon.testing.TestClient(app)
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature,
               "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}
    forged = client.simulate_post("/hooks/sendgrid/events", body=body.replace(b"e1", b"e9"),
                                  headers=headers)
    assert forged.status_code == 401
    assert client.simulate_post("/hooks/sendgrid/events", body=body, headers=headers).status_code == 204
    assert client.simulate_post("/hooks/sendgrid/events", body=body, headers=headers).status_code == 204
    with tenant_tx(tenant_a.id) as database:
        statuses = dict(database.execute_sql(
            "SELECT email, status FROM messages WHERE campaign_id = %s AND email IN "
            "('user1@example.test', 'user2@example.test', 'user3@example.test')",
            (str(campaign_id),)).fetchall())
        delivered = database.execute_sql(
            "SELECT count(*) FROM events WHERE campaign_id = %s AND type = 'delivered'",
            (str(campaign_id),)).fetchone()[0]
        suppressed = database.execute_sql(
            "SELECT reason FROM suppressions WHERE email_lower = 'user2@example.test'").fetchone()
    assert statuses == {"user1@example.test": "delivered", "user2@example.test": "bounced",
                        "user3@example.test": "accepted"}
    assert delivered == 1  # the replayed webhook counted once
    assert suppressed == ("hard_bounce",)
