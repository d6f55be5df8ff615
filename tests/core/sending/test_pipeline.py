"""A campaign end to end in-process: schedule, tick, drain through smtp to a sink."""

from __future__ import annotations

import dataclasses

import pytest
from swiftmail_plugins.smtp_transport import SmtpTransport

from swiftmail_core.db import tenant_tx
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants, lifecycle, sweeper
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.smtp_sink import SmtpSink
from tests.core.sending.conftest import ledger_counts


class _SinkTransportPlugin:
    def __init__(self, port: int) -> None:
        self.port = port

    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return [SmtpTransport({"host": "127.0.0.1", "port": self.port}, name="sink")]


@pytest.fixture
def sink():  # type: ignore[no-untyped-def]
    with SmtpSink() as running:
        yield running


@pytest.fixture
def sending(settings, runtime, sink):  # type: ignore[no-untyped-def]
    """A worker whose plugins include a 'sink' transport; fast retries."""
    plugin = _SinkTransportPlugin(sink.port)
    fast = dataclasses.replace(settings, send_retry_base_seconds=0, send_batch_size=25)
    plugins = PluginManager.load(fast, extra=[plugin])
    return fast, plugins, SendingWorker(fast, plugins)


def _run(settings, plugins, worker, rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        sweeper.tick(settings, plugins)
        if not worker.drain(30) and not sweeper.has_due_work():
            sweeper.tick(settings, plugins)
            return


def test_campaign_to_overlapping_lists_reaches_each_address_once(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
        database.execute_sql(
            "INSERT INTO suppressions (tenant_id, email_lower, reason) VALUES (%s, 'user3@example.test', 'manual')",
            (str(tenant.id),))
        database.execute_sql("UPDATE contacts SET status = 'unsubscribed' WHERE email_lower = 'user4@example.test'")
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    _run(settings, plugins, worker)
    assert sink.handler.count() == 48  # 50 distinct addresses minus suppressed and unsubscribed
    assert max(sink.handler.per_recipient.values()) == 1
    assert ledger_counts(tenant.id, campaign_id) == {"accepted": 48}
    with tenant_tx(tenant.id) as database:
        status, count = database.execute_sql(
            "SELECT status, recipient_count FROM campaigns WHERE id = %s", (str(campaign_id),)
        ).fetchone()
    assert (status, count) == ("sent", 48)
    bodies = [m for m in sink.handler.messages() if m["To"] == "user7@example.test"]
    assert "First7" in bodies[0]["Subject"]


def test_suppressed_after_resolution_is_skipped_at_claim(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    sweeper.tick(settings, plugins)  # resolves the audience: 50 rows
    with tenant_tx(tenant.id) as database:
        database.execute_sql(
            "INSERT INTO suppressions (tenant_id, email_lower, reason) VALUES (%s, 'user9@example.test', 'manual')",
            (str(tenant.id),))
    _run(settings, plugins, worker)
    assert ledger_counts(tenant.id, campaign_id) == {"accepted": 49, "suppressed": 1}


def test_transient_then_permanent_failures(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    seen: dict[str, int] = {}

    def reply(address: str) -> str | None:
        seen[address] = seen.get(address, 0) + 1
        if address == "user1@example.test":
            return "550 5.1.1 no such user"
        if address.startswith("user2") and seen[address] <= 2:
            return "451 4.3.0 try again"
        return None

    sink.handler.rcpt_reply = reply
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    _run(settings, plugins, worker)
    assert ledger_counts(tenant.id, campaign_id) == {"accepted": 49, "bounced": 1}
    with tenant_tx(tenant.id) as database:
        reason = database.execute_sql(
            "SELECT reason FROM suppressions WHERE email_lower = 'user1@example.test'").fetchone()
        events = dict(database.execute_sql(
            "SELECT type, count(*) FROM events WHERE campaign_id = %s GROUP BY type",
            (str(campaign_id),)).fetchall())
    assert reason == ("hard_bounce",)
    assert events["bounced"] == 1 and events["accepted"] == 49 and events["deferred"] >= 2


def test_transactional_and_test_sends_use_the_same_pipeline(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    _, _, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
        template_id = database.execute_sql(
            "INSERT INTO templates (tenant_id, name, subject, html) VALUES "
            "(%s, 'reset', 'Code {{ contact.data.code }}', '<p>Your code is {{ contact.data.code }}</p>') RETURNING id",
            (str(tenant.id),)).fetchone()[0]
    row = lifecycle.send_transactional(
        tenant.id, to="user5@example.test", from_email="app@sender.test",
        template_id=template_id, data={"code": "913"}, transport="sink")
    ids = lifecycle.test_send(tenant.id, campaign_id, ["qa@else.test"])  # campaign still a draft
    worker.drain(10)  # (may also meet other tests' leftover rows: only ours are checked)
    by_recipient = {str(m["To"]): m for m in sink.handler.messages()}
    assert set(by_recipient) == {"user5@example.test", "qa@else.test"}
    assert by_recipient["user5@example.test"]["Subject"] == "Code 913"
    with tenant_tx(tenant.id) as database:
        statuses = dict(database.execute_sql(
            "SELECT id, status FROM messages WHERE id = ANY (%s)", ([row["id"], *ids],)).fetchall())
    assert set(statuses.values()) == {"accepted"}


def test_test_send_of_a_template_based_draft_uses_the_template(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    _, _, worker = sending
    with tenant_tx(tenant.id) as database:
        template_id = database.execute_sql(
            "INSERT INTO templates (tenant_id, name, subject, html) VALUES "
            "(%s, 'news', 'From the template, {{ contact.first_name }}', "
            "'<p>Template body for {{ contact.first_name }}</p>') RETURNING id",
            (str(tenant.id),)).fetchone()[0]
        database.execute_sql(
            "UPDATE campaigns SET transport = 'sink', template_id = %s, subject = '', html = '' "
            "WHERE id = %s", (str(template_id), str(campaign_id)))
    lifecycle.test_send(tenant.id, campaign_id, ["user8@example.test"])
    worker.drain(10)
    (message,) = [m for m in sink.handler.messages() if str(m["To"]) == "user8@example.test"]
    assert message["Subject"] == "From the template, First8"
    assert "Template body for First8" in message.get_body(("html",)).get_content()


def test_resend_to_failed_requeues_only_failed_rows(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    _run(settings, plugins, worker)
    with tenant_tx(tenant.id) as database:  # as if three had expired after their retries
        database.execute_sql(
            "UPDATE messages SET status = 'expired' WHERE id IN (SELECT id FROM messages "
            "WHERE campaign_id = %s ORDER BY id LIMIT 3)", (str(campaign_id),))
    before = sink.handler.count()
    assert lifecycle.resend_failed(tenant.id, campaign_id) == 3
    _run(settings, plugins, worker)
    assert sink.handler.count() - before == 3
    assert ledger_counts(tenant.id, campaign_id) == {"accepted": 50}
    with tenant_tx(tenant.id) as database:
        status = database.execute_sql("SELECT status FROM campaigns WHERE id = %s",
                                      (str(campaign_id),)).fetchone()[0]
    assert status == "sent"


def test_transactional_templates_see_the_callers_data_as_data(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    # Regression: the documented name `data` was undefined; only `contact.data` worked.
    tenant, _, _ = audience
    _, _, worker = sending
    with tenant_tx(tenant.id) as database:
        template_id = database.execute_sql(
            "INSERT INTO templates (tenant_id, name, subject, html) VALUES "
            "(%s, 'otp', 'Code {{ data.code }}', '<p>{{ data.code }} / {{ contact.data.code }}</p>') "
            "RETURNING id", (str(tenant.id),)).fetchone()[0]
    lifecycle.send_transactional(tenant.id, to="otp@example.test", from_email="app@sender.test",
                                 template_id=template_id, data={"code": "4242"},
                                 transport="sink")
    worker.drain(10)
    (message,) = [m for m in sink.handler.messages() if str(m["To"]) == "otp@example.test"]
    assert message["Subject"] == "Code 4242"
    assert "4242 / 4242" in message.get_body(("html",)).get_content()


def test_a_test_send_of_a_draft_with_tracked_links_renders(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    # Regression: a draft's links were registered only when the campaign started, so
    # a test send of HTML with links failed to render.
    tenant, _, campaign_id = audience
    _, _, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql(
            "UPDATE campaigns SET transport = 'sink', html = %s WHERE id = %s",
            ('<p><a href="https://example.com/offer">See the offer</a></p>', str(campaign_id)))
    (ledger_id,) = lifecycle.test_send(tenant.id, campaign_id, ["links@else.test"])
    worker.drain(10)
    (message,) = [m for m in sink.handler.messages() if str(m["To"]) == "links@else.test"]
    html = message.get_body(("html",)).get_content()
    assert "/t/c/" in html and "https://example.com/offer" not in html
    with tenant_tx(tenant.id) as database:
        assert database.execute_sql("SELECT status FROM messages WHERE id = %s",
                                    (ledger_id,)).fetchone()[0] == "accepted"


class _RecordingTransport:
    """A transport that accepts everything and remembers which rows it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.ledger_ids: list[int] = []

    def send(self, messages):  # type: ignore[no-untyped-def]
        from swiftmail_core.transports import Outcome, SendResult

        self.ledger_ids.extend(m.ledger_id for m in messages)
        return [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in messages]

    def close(self) -> None:
        pass


class _RecorderPlugin:
    def __init__(self, transport: _RecordingTransport) -> None:
        self.transport = transport

    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return [self.transport]


def test_each_message_goes_through_its_own_rows_transport(tenant_a, settings, sink) -> None:  # type: ignore[no-untyped-def]
    """A batch whose campaign and transactional rows interleave in due order.

    The composer returns messages grouped by campaign; the worker used to pair
    them with the claimed rows by position, so a campaign message could go out
    through the transactional row's transport (and the other way round).
    """
    from tests.core.sending.conftest import make_campaign, park_other_tenants_work

    recorder = _RecordingTransport()
    plugins = PluginManager.load(settings, extra=[_SinkTransportPlugin(sink.port),
                                                  _RecorderPlugin(recorder)])
    campaign_id = make_campaign(tenant_a.id, [], transport="sink")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                             (str(campaign_id),))
        ids = {}
        for name, kind, ago in (("c1", "campaign", 3), ("t1", "transactional", 2),
                                ("c2", "campaign", 1)):
            contact = database.execute_sql(
                "INSERT INTO contacts (tenant_id, email) VALUES (%s, %s) RETURNING id",
                (str(tenant_a.id), f"{name}@pair.example.test")).fetchone()[0]
            ids[name] = database.execute_sql(
                "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport, "
                "payload, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, "
                "now() - make_interval(secs => %s)) RETURNING id",
                (str(tenant_a.id), str(campaign_id) if kind == "campaign" else None, str(contact),
                 f"{name}@pair.example.test", kind, "sink" if kind == "campaign" else "recorder",
                 '{"subject": "s", "text": "t", "html": "", "from_email": "a@sender.test", '
                 '"from_name": "", "reply_to": "", "data": {}}', ago)).fetchone()[0]
        due_tenants.mark_due(database, tenant_a.id)
    park_other_tenants_work(tenant_a.id)
    assert SendingWorker(settings, plugins).process_batch(limit=10) == 3
    assert recorder.ledger_ids == [ids["t1"]]
    assert sorted(sink.handler.per_recipient) == ["c1@pair.example.test", "c2@pair.example.test"]


def test_a_database_lost_after_the_hand_off_still_records_the_batch(  # type: ignore[no-untyped-def]
        audience, sending, sink, monkeypatch) -> None:
    """The batch went out, then the database was lost (a failover) before the worker's writes.

    The transport's failure count was reset between the hand-off and the result write; when
    that reset lost its server, the batch stopped unrecorded, its rows waited out their lease
    and went out a second time (duplicates the cluster chaos test saw in a PostgreSQL failover).
    """
    import psycopg2

    from swiftmail_core.sending import transport_failures

    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    sweeper.tick(settings, plugins)  # resolves the audience: 50 rows

    def database_lost(rows) -> None:  # type: ignore[no-untyped-def]
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(transport_failures, "note_success", database_lost)
    with pytest.raises(psycopg2.OperationalError):
        worker.process_batch()
    sent = sink.handler.count()
    assert sent == settings.send_batch_size
    assert ledger_counts(tenant.id, campaign_id) == {"accepted": sent, "queued": 50 - sent}


def test_resend_to_failed_forgets_the_lost_answers_receiver(audience, sending, sink) -> None:  # type: ignore[no-untyped-def]
    # Regression: resend_failed kept resend_to/resend_until, so a requeued row went to
    # the (perhaps dead) relay of an old lost answer only, and, its resend window long
    # past, ended 'unknown' at the first deferral instead of being sent anew.
    tenant, _, campaign_id = audience
    settings, plugins, worker = sending
    with tenant_tx(tenant.id) as database:
        database.execute_sql("UPDATE campaigns SET transport = 'sink' WHERE id = %s",
                             (str(campaign_id),))
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    _run(settings, plugins, worker)
    with tenant_tx(tenant.id) as database:  # lost answers, resent until the window closed
        database.execute_sql(
            "UPDATE messages SET status = 'expired', resend_to = 'http://10.0.0.9:2526', "
            "resend_until = now() - interval '2 days' WHERE id IN (SELECT id FROM messages "
            "WHERE campaign_id = %s ORDER BY id LIMIT 2)", (str(campaign_id),))
    assert lifecycle.resend_failed(tenant.id, campaign_id) == 2
    with tenant_tx(tenant.id) as database:
        pinned = database.execute_sql(
            "SELECT count(*) FROM messages WHERE campaign_id = %s AND "
            "(resend_to IS NOT NULL OR resend_until IS NOT NULL)",
            (str(campaign_id),)).fetchone()[0]
    assert pinned == 0
