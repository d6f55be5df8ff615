"""Outgoing webhooks: signatures, retries against a real receiver, SSRF refusals."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import uuid

import pytest

from swiftmail_core.crypto import encrypt
from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.testing.dns import DnsServer
from swiftmail_core.webhooks import UrlPolicy, check_webhook_url, sign_payload, verify_signature
from swiftmail_core.webhooks.dispatcher import Dispatcher, next_delay

SECRET = "whsec_test_secret"
LOOPBACK = UrlPolicy(allow_loopback_http=True)
STRICT = UrlPolicy()


class Receiver:
    """A real HTTP server on loopback answering scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()
                self.wfile.write(b"x" * 200_000 if status == 200 else b"nope")

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():  # type: ignore[no-untyped-def]
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def add_webhook(settings, tenant_id, url: str, types=("opened",)) -> uuid.UUID:  # type: ignore[no-untyped-def]
    webhook_id = uuid.uuid4()
    with tenant_tx(tenant_id):
        app_db.execute_sql(
            "INSERT INTO webhooks (tenant_id, id, url, event_types, secret_encrypted) "
            "VALUES (%s, %s, %s, %s, %s)",
            (str(tenant_id), str(webhook_id), url, list(types),
             encrypt(settings.secret_key, SECRET.encode())),
        )
    return webhook_id


def deliveries(tenant_id) -> list[tuple]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return app_db.execute_sql(
            "SELECT status, attempts, response_status FROM webhook_deliveries ORDER BY id"
        ).fetchall()


def make_due(tenant_id) -> None:  # type: ignore[no-untyped-def]
    """Skip the backoff: the deliveries' retry time and the webhook's pause."""
    with tenant_tx(tenant_id):
        app_db.execute_sql("UPDATE webhook_deliveries SET next_attempt_at = now() "
                           "WHERE status = 'pending'")
        app_db.execute_sql("UPDATE webhooks SET paused_until = NULL")


def test_signature_verifies_and_refuses_changes() -> None:
    body = b'{"type":"opened"}'
    header = sign_payload(SECRET, body, timestamp=1_700_000_000)
    assert verify_signature(SECRET, header, body, now=1_700_000_010)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify_signature("other", header, body, now=1_700_000_010)
    assert not verify_signature(SECRET, header, body, now=1_700_009_999)  # replayed later
    assert not verify_signature(SECRET, "t=abc,v1=00", body)


def test_delivery_is_signed_retried_then_succeeds(settings, tenant_a, receiver_factory,
                                                  plugin_manager) -> None:
    receiver = receiver_factory([500, 302])
    add_webhook(settings, tenant_a.id, receiver.url)
    stored = record_events([EventRecord(tenant_a.id, "opened", email="a@example.com")],
                           plugin_manager)
    # record_events queued the delivery in the transaction that stored the event.
    assert stored and deliveries(tenant_a.id) == [("pending", 0, None)]
    dispatcher = Dispatcher(settings.secret_key, LOOPBACK, tenant_id=tenant_a.id)
    assert dispatcher.deliver_due() == 1          # 500: retry later
    assert dispatcher.deliver_due() == 0          # not due yet (backoff)
    make_due(tenant_a.id)
    assert dispatcher.deliver_due() == 1          # 302: never followed, a failure
    make_due(tenant_a.id)
    assert dispatcher.deliver_due() == 1          # 200
    assert deliveries(tenant_a.id) == [("succeeded", 3, 200)]
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert verify_signature(SECRET, headers["SwiftMail-Signature"], body)
    assert json.loads(body)["type"] == "opened"
    with tenant_tx(tenant_a.id):
        excerpt = app_db.execute_sql(
            "SELECT length(response_excerpt) FROM webhook_deliveries").fetchone()[0]
    assert excerpt <= 1000


def test_backoff_grows_and_is_capped() -> None:
    delays = [next_delay(n, jitter=0) for n in range(1, 12)]
    assert delays[0] == datetime.timedelta(seconds=30)
    assert delays[1] == datetime.timedelta(seconds=60)
    assert max(delays) == datetime.timedelta(hours=2)


def test_persistent_failure_disables_webhook_with_an_event(settings, tenant_a,
                                                            receiver_factory) -> None:
    receiver = receiver_factory([503] * 10)
    webhook_id = add_webhook(settings, tenant_a.id, receiver.url)
    assert record_events([EventRecord(tenant_a.id, "opened")])
    with tenant_tx(tenant_a.id):  # the event is a day old: its retry window is over
        app_db.execute_sql("UPDATE webhook_deliveries SET created_at = now() - interval '1 day'")
    Dispatcher(settings.secret_key, LOOPBACK, tenant_id=tenant_a.id).deliver_due()
    assert deliveries(tenant_a.id) == [("abandoned", 1, 503)]
    with tenant_tx(tenant_a.id):
        enabled, reason = app_db.execute_sql(
            "SELECT enabled, disabled_reason FROM webhooks WHERE id = %s", (str(webhook_id),)
        ).fetchone()
        disabled_events = app_db.execute_sql(
            "SELECT detail->>'webhook_id' FROM events WHERE type = 'webhook_disabled'"
        ).fetchall()
    assert not enabled and "failed" in reason
    assert disabled_events == [(str(webhook_id),)]


def test_delivery_rechecks_the_address(settings, tenant_a, receiver_factory) -> None:
    receiver = receiver_factory([200])
    add_webhook(settings, tenant_a.id, receiver.url)
    assert record_events([EventRecord(tenant_a.id, "opened")])
    # Without the loopback allowance the same URL is refused at delivery time.
    Dispatcher(settings.secret_key, STRICT, tenant_id=tenant_a.id).deliver_due()
    assert deliveries(tenant_a.id)[0][0] == "pending"
    assert receiver.received == []


@pytest.mark.parametrize("url", [
    "http://example.com/hook",            # not https
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://10.1.2.3/hook",
    "https://172.16.0.1/hook",
    "https://192.168.1.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[fd00:ec2::254]/",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://2130706433/hook",            # decimal 127.0.0.1
    "https://0x7f000001/hook",            # hex
    "https://0177.0.0.1/hook",            # octal
    "https://127.1/hook",                 # short form
    # IPv6 forms that embed an internal IPv4 (regression: all four were accepted)
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "https://[2002:7f00:1::]/hook",       # 6to4 of 127.0.0.1
    "https://[::127.0.0.1]/hook",         # IPv4-compatible
    "https://[::ffff:0:7f00:1]/hook",     # SIIT
    "https://[64:ff9b:1::a00:1]/hook",    # NAT64 local-use prefix, 10.0.0.1
    "https://user:pw@example.com/hook",
    "javascript:alert(1)",
    "https://exa mple.com/",
])
def test_ssrf_attempts_are_refused_at_save_time(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_webhook_url(url, STRICT, resolve=lambda host: ["93.184.216.34"])
    assert caught.value.errors[0]["field"] == "url"


def test_dns_answers_pointing_inside_are_refused() -> None:
    server = DnsServer().start()
    try:
        server.add("inside.example", "A", "10.0.0.5")
        server.add("metadata.example", "A", "169.254.169.254")
        server.add("mixed.example", "A", "93.184.216.34", "127.0.0.1")
        server.add("v6inside.example", "AAAA", "::1")
        server.add("public.example", "A", "93.184.216.34")
        policy = UrlPolicy(nameservers=("127.0.0.1",), dns_port=server.port)
        server.add("nat64inside.example", "AAAA", "64:ff9b::a00:5")
        for host in ("inside", "metadata", "mixed", "v6inside", "nat64inside"):
            with pytest.raises(ValidationError) as caught:
                check_webhook_url(f"https://{host}.example/hook", policy)
            # APPSEC: the error never says what an internal name resolves to
            detail = caught.value.errors[0]["message"]
            assert "10.0.0.5" not in detail and "127.0.0.1" not in detail
        checked = check_webhook_url("https://public.example/hook", policy)
        assert checked.addresses == ("93.184.216.34",)
    finally:
        server.stop()


def test_loopback_http_needs_the_explicit_setting() -> None:
    with pytest.raises(ValidationError):
        check_webhook_url("http://127.0.0.1:8080/hook", STRICT)
    assert check_webhook_url("http://127.0.0.1:8080/hook", LOOPBACK).addresses == ("127.0.0.1",)
    with pytest.raises(ValidationError):  # the allowance is for loopback only
        check_webhook_url("http://10.0.0.1/hook", LOOPBACK)


def test_events_and_their_deliveries_commit_together(settings, tenant_a, receiver_factory,
                                                     monkeypatch) -> None:
    """A crash while queueing deliveries leaves neither the events nor the deliveries."""
    import swiftmail_core.webhooks.queue as queue_module

    add_webhook(settings, tenant_a.id, receiver_factory([200]).url)

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("crash after the event insert, before the commit")

    monkeypatch.setattr(queue_module, "execute_values", explode)
    with pytest.raises(RuntimeError):
        record_events([EventRecord(tenant_a.id, "opened", source_key="crash-1")])
    monkeypatch.undo()
    with tenant_tx(tenant_a.id):
        assert app_db.execute_sql("SELECT count(*) FROM events").fetchone()[0] == 0
    assert deliveries(tenant_a.id) == []
    assert record_events([EventRecord(tenant_a.id, "opened", source_key="crash-1")])
    assert deliveries(tenant_a.id) == [("pending", 0, None)]


def test_a_nat64_form_of_a_public_address_is_accepted() -> None:
    # DNS64 networks answer public IPv4 hosts with 64:ff9b::/96 addresses: still public.
    checked = check_webhook_url("https://[64:ff9b::5db8:d822]/hook", STRICT)
    assert checked.addresses == ("64:ff9b::5db8:d822",)
