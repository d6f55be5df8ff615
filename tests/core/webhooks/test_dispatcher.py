"""Webhook deliveries: concurrent, isolated per endpoint, claimed exactly once.

Every receiver is a real HTTP server on loopback; every wait is bounded.
"""

from __future__ import annotations

import collections
import datetime
import http.server
import threading
import time
import uuid

import pytest

from swiftmail_core.crypto import encrypt
from swiftmail_core.db import app_db, system_tx, tenant_tx
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.public_ids import public_ids
from swiftmail_core.sending import sweeper
from swiftmail_core.webhooks import UrlPolicy
from swiftmail_core.webhooks import dispatcher as dispatcher_module
from swiftmail_core.webhooks.dispatcher import Dispatcher
from swiftmail_core.webhooks.transport import PostResult

SECRET = "whsec_test_secret"
LOOPBACK = UrlPolicy(allow_loopback_http=True)
BOUND = 20.0  # seconds any wait in these tests may take at most


class Receiver:
    """A threaded loopback HTTP receiver; ``gate`` (when given) holds each request."""

    def __init__(self, gate: threading.Event | None = None, statuses: list[int] | None = None,
                 delay: float = 0.0) -> None:
        self.gate = gate
        self.statuses = list(statuses or [])
        self.delay = delay
        self.deliveries: list[str] = []
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.deliveries.append(self.headers["SwiftMail-Delivery"])
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(BOUND)
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():  # type: ignore[no-untyped-def]
    made: list[Receiver] = []

    def make(**options) -> Receiver:  # type: ignore[no-untyped-def]
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def add_webhook(settings, tenant_id, url: str, secret_key: str | None = None) -> uuid.UUID:  # type: ignore[no-untyped-def]
    webhook_id = uuid.uuid4()
    with tenant_tx(tenant_id):
        app_db.execute_sql(
            "INSERT INTO webhooks (tenant_id, id, url, event_types, secret_encrypted) "
            "VALUES (%s, %s, %s, '{}', %s)",
            (str(tenant_id), str(webhook_id), url,
             encrypt(secret_key or settings.secret_key, SECRET.encode())),
        )
    return webhook_id


def add_events(tenant_id, count: int = 1) -> None:  # type: ignore[no-untyped-def]
    assert record_events([EventRecord(tenant_id, "opened", email=f"{n}@example.com")
                          for n in range(count)])


def park_other_deliveries(*tenants) -> None:  # type: ignore[no-untyped-def]
    """Abandon due deliveries other tests left behind (the claim is cross-tenant)."""
    with system_tx() as database:
        database.execute_sql(
            "UPDATE webhook_deliveries SET status = 'abandoned' "
            "WHERE status IN ('pending', 'delivering') AND NOT tenant_id = ANY(%s::uuid[])",
            ([str(tenant.id) for tenant in tenants],))


def deliveries(tenant_id) -> list[tuple]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return app_db.execute_sql(
            "SELECT id, status, attempts, response_status, response_excerpt "
            "FROM webhook_deliveries ORDER BY id").fetchall()


def statuses(tenant_id) -> collections.Counter:  # type: ignore[no-untyped-def]
    return collections.Counter(row[1] for row in deliveries(tenant_id))


def test_a_slow_endpoint_does_not_delay_another_tenants_delivery(
        settings, tenant_a, tenant_b, receivers) -> None:
    # Regression: deliveries were POSTed one by one, so tenant B waited for A's receiver.
    park_other_deliveries(tenant_a, tenant_b)
    slow = receivers(gate=threading.Event())
    fast = receivers()
    add_webhook(settings, tenant_a.id, slow.url)
    add_webhook(settings, tenant_b.id, fast.url)
    add_events(tenant_a.id, 3)   # older than B's: first in line
    add_events(tenant_b.id, 1)
    dispatcher = Dispatcher(settings.secret_key, LOOPBACK, timeout=30)
    round_ = threading.Thread(target=dispatcher.deliver_due, daemon=True)
    round_.start()
    try:
        assert fast.arrived.wait(BOUND), "B's delivery waited for A's slow receiver"
        assert slow.arrived.wait(BOUND)
        assert not slow.gate.is_set()  # A's receiver is still holding its requests
        for _ in range(int(BOUND / 0.05)):  # B's result is recorded while A is held
            if statuses(tenant_b.id) == {"succeeded": 1}:
                break
            time.sleep(0.05)
        assert statuses(tenant_b.id) == {"succeeded": 1}
        # At most webhook_endpoint_concurrency (2) of A's deliveries are in flight.
        assert statuses(tenant_a.id) == {"delivering": 2, "pending": 1}
    finally:
        slow.gate.set()
        round_.join(BOUND)
    assert not round_.is_alive()
    assert statuses(tenant_a.id) == {"succeeded": 3}


def test_two_deliverers_post_each_delivery_exactly_once(
        settings, tenant_a, tenant_b, receivers, monkeypatch) -> None:
    # Regression: a deliverer claimed 50 and POSTed them one by one past its
    # lease; a second deliverer took the expired ones and POSTed them again
    # (the database recorded one attempt). A lease shorter than that batch
    # (here 1 s against requests of 0.2 s) reproduces it.
    monkeypatch.setattr(dispatcher_module, "LEASE", datetime.timedelta(seconds=1))
    park_other_deliveries(tenant_a, tenant_b)
    receiver = receivers(delay=0.2)
    for tenant in (tenant_a, tenant_b):
        for path in ("one", "two"):
            add_webhook(settings, tenant.id, f"{receiver.url}/{path}")
        add_events(tenant.id, 5)
    ids = public_ids(settings.secret_key)
    expected = {ids.encode("webhook_delivery", tenant.id, row[0])
                for tenant in (tenant_a, tenant_b) for row in deliveries(tenant.id)}
    assert len(expected) == 20

    def run() -> None:
        dispatcher = Dispatcher(settings.secret_key, LOOPBACK)
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if not dispatcher.deliver_due():
                if all(set(statuses(t.id)) == {"succeeded"} for t in (tenant_a, tenant_b)):
                    return
                time.sleep(0.05)

    deliverers = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for deliverer in deliverers:
        deliverer.start()
    for deliverer in deliverers:
        deliverer.join(BOUND + 5)
    posted = collections.Counter(receiver.deliveries)
    assert set(posted) == expected
    assert [d for d, n in posted.items() if n > 1] == []
    for tenant in (tenant_a, tenant_b):
        assert {(row[1], row[2]) for row in deliveries(tenant.id)} == {("succeeded", 1)}


def test_a_deliverer_whose_lease_expired_cannot_record_its_result(
        settings, tenant_a, receivers, plugin_manager) -> None:
    receiver = receivers()
    webhook_id = add_webhook(settings, tenant_a.id, receiver.url)
    add_events(tenant_a.id)
    late = Dispatcher(settings.secret_key, LOOPBACK, tenant_id=tenant_a.id)
    [claimed] = late.claim()
    with tenant_tx(tenant_a.id):  # the late deliverer stalls past its lease
        app_db.execute_sql("UPDATE webhook_deliveries SET lease_expires_at = now() - "
                           "interval '1 second' WHERE id = %s", (claimed.delivery_id,))
    assert sweeper.tick(settings, plugin_manager)["webhook_reclaimed"] >= 1
    [row] = deliveries(tenant_a.id)
    assert row[1:3] == ("pending", 1) and "lease expired" in row[4]
    assert Dispatcher(settings.secret_key, LOOPBACK, tenant_id=tenant_a.id).deliver_due() == 1
    assert late.finish(claimed, PostResult(500, "late answer")) is False
    assert [row[1:4] for row in deliveries(tenant_a.id)] == [("succeeded", 2, 200)]
    with tenant_tx(tenant_a.id):
        failures, paused_until = app_db.execute_sql(
            "SELECT consecutive_failures, paused_until FROM webhooks WHERE id = %s",
            (str(webhook_id),)).fetchone()
    assert (failures, paused_until) == (0, None)
    assert receiver.deliveries == [public_ids(settings.secret_key).encode(
        "webhook_delivery", tenant_a.id, claimed.delivery_id)]


def test_an_undecryptable_secret_fails_that_endpoint_only(
        settings, tenant_a, tenant_b, receivers) -> None:
    # Regression: the decrypt error escaped and ended the whole round.
    park_other_deliveries(tenant_a, tenant_b)
    broken, fine = receivers(), receivers()
    add_webhook(settings, tenant_a.id, broken.url, secret_key="another-install-key-" + "y" * 32)
    add_webhook(settings, tenant_b.id, fine.url)
    add_events(tenant_a.id)
    add_events(tenant_b.id)
    assert Dispatcher(settings.secret_key, LOOPBACK).deliver_due() == 2
    assert len(fine.deliveries) == 1 and broken.deliveries == []
    [row] = deliveries(tenant_a.id)
    assert row[1:4] == ("pending", 1, None)
    assert "cannot decrypt" in row[4] and "secret_key" in row[4]
    assert statuses(tenant_b.id) == {"succeeded": 1}


def test_a_failing_endpoint_is_paused_until_its_backoff_ends(
        settings, tenant_a, receivers) -> None:
    receiver = receivers(statuses=[503])
    webhook_id = add_webhook(settings, tenant_a.id, receiver.url)
    add_events(tenant_a.id, 3)
    dispatcher = Dispatcher(settings.secret_key, LOOPBACK, tenant_id=tenant_a.id,
                            endpoint_concurrency=1)
    assert dispatcher.deliver_due() == 1  # 503: the webhook pauses, the others wait
    assert len(receiver.deliveries) == 1
    assert sorted(row[1:3] for row in deliveries(tenant_a.id)) == [
        ("pending", 0), ("pending", 0), ("pending", 1)]
    with tenant_tx(tenant_a.id):
        paused = app_db.execute_sql(
            "SELECT paused_until > now(), consecutive_failures FROM webhooks WHERE id = %s",
            (str(webhook_id),)).fetchone()
    assert paused == (True, 1)
    assert dispatcher.deliver_due() == 0  # still paused
    with tenant_tx(tenant_a.id):  # the pause and the retry delay are over
        app_db.execute_sql("UPDATE webhooks SET paused_until = now() - interval '1 second'")
        app_db.execute_sql("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert dispatcher.deliver_due() == 3
    assert statuses(tenant_a.id) == {"succeeded": 3}
    with tenant_tx(tenant_a.id):
        assert app_db.execute_sql(
            "SELECT paused_until, consecutive_failures FROM webhooks WHERE id = %s",
            (str(webhook_id),)).fetchone() == (None, 0)


def _hint(tenant_id) -> bool | None:  # type: ignore[no-untyped-def]
    """Whether the tenant's webhook hint is due now (None: no hint)."""
    with system_tx() as database:
        row = database.execute_sql(
            "SELECT due_at <= now() FROM due_tenants WHERE tenant_id = %s AND queue = 'webhooks'",
            (str(tenant_id),)).fetchone()
    return None if row is None else row[0]


def test_a_webhook_at_its_concurrency_limit_leaves_its_tenant_not_due(
        settings, tenant_a, receivers) -> None:
    # Regression: the claim left the tenant due now while its only due deliveries
    # waited for a slot, so every poll claimed it again and got nothing.
    park_other_deliveries(tenant_a)
    receiver = receivers()
    add_webhook(settings, tenant_a.id, receiver.url)
    add_events(tenant_a.id, 3)
    dispatcher = Dispatcher(settings.secret_key, LOOPBACK, endpoint_concurrency=2)
    first, second = dispatcher.claim()
    assert statuses(tenant_a.id) == {"delivering": 2, "pending": 1}
    assert _hint(tenant_a.id) is False  # not due until a slot frees or a lease ends
    assert dispatcher.claim() == []
    assert _hint(tenant_a.id) is False  # the empty round's refresh kept it too
    assert dispatcher.finish(first, PostResult(200, "ok"))
    assert _hint(tenant_a.id) is True  # a slot is free: due again
    [third] = dispatcher.claim()
    for claimed in (second, third):
        assert dispatcher.finish(claimed, PostResult(200, "ok"))
    assert statuses(tenant_a.id) == {"succeeded": 3}
    assert dispatcher.claim() == []
    assert _hint(tenant_a.id) is None
