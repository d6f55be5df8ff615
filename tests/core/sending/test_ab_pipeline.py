"""A/B tests through the real pipeline: audience, claims, a sink, tracking, decision, rest.

Every recipient gets exactly one message, with the variant its ledger row
records: across the test phase, the decision, a pause, and a worker that
claimed rows and died.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
from collections import Counter

import falcon.testing
import pytest
from swiftmail_plugins.smtp_transport import SmtpTransport
from swiftmail_web.public import create_tracking_app
from swiftmail_web.public.services import PublicConfig, PublicServices
from swiftmail_web.resources.ab_tests import show

from swiftmail_core.ab_tests import variants
from swiftmail_core.db import app_db, system_tx, tenant_tx
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, outbox, sweeper
from swiftmail_core.sending.compose import Composer
from swiftmail_core.sending.worker import SendingWorker
from swiftmail_core.testing.smtp_sink import SmtpSink
from swiftmail_core.tracking_ingest import HitStream
from swiftmail_core.tracking_ingest.drainer import Drainer
from tests.core.sending.conftest import (
    add_subscribers,
    cancel_leftover_work,
    make_campaign,
    make_list,
    park_other_tenants_work,
)
from tests.core.sending.test_ab_tests import backdate, ledger, winner

HUMAN_BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.0 Safari/605.1.15")
SCANNER = "Barracuda Sentinel (EE)"
TRACKING_PATH = re.compile(r"https?://[^/\"]+(/t/[oc]/[A-Za-z0-9_\-.]+)")



@pytest.fixture(autouse=True)
def _leave_no_due_rows(tenant_a):  # type: ignore[no-untyped-def]
    """Cancel what a test left unsent (claims are cross-tenant: other tests would meet it)."""
    yield
    cancel_leftover_work(tenant_a.id)


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
    fast = dataclasses.replace(settings, send_retry_base_seconds=0, send_batch_size=25)
    plugins = PluginManager.load(fast, extra=[_SinkTransportPlugin(sink.port)])
    return fast, plugins, SendingWorker(fast, plugins)


@pytest.fixture
def tracking(runtime, settings, redis_client, run_id):  # type: ignore[no-untyped-def]
    """The public tracking app on a private hit stream, and a drainer of that stream."""
    suffix = uuid.uuid4().hex[:8]
    config = PublicConfig(stream=f"{run_id}:hits:{suffix}",
                          redis_prefix=f"swiftmail-test-{run_id}-{suffix}:",
                          redis_timeout_ms=2000)
    services = PublicServices.build(settings, redis_client, runtime.plugins, config)
    services.stream.ensure_group()
    client = falcon.testing.TestClient(create_tracking_app(services))
    # NOTE: the test clicks right after sending; a zero scanner window keeps the
    # "too fast to be human" rule out of it (user agents and addresses still count).
    drainer = Drainer(HitStream(redis_client, config.stream), "ab-test", block_ms=10,
                      scanner_window=datetime.timedelta(0))
    yield client, drainer
    redis_client.delete(config.stream)


def _run(settings, plugins, worker, rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        sweeper.tick(settings, plugins)
        if not worker.drain(30) and not sweeper.has_due_work():
            sweeper.tick(settings, plugins)
            return


def _ab_campaign(tenant_id: uuid.UUID, contacts: int, metric: str) -> uuid.UUID:
    list_id = make_list(tenant_id)
    add_subscribers(tenant_id, list_id, contacts)
    campaign_id = make_campaign(tenant_id, [list_id], transport="sink",
                                html='<p>Hello {{ contact.first_name }}</p>')
    variants.set_ab_test(tenant_id, campaign_id, variants.AbSettings(50, metric, 3600), [
        {"subject": "Subject A",
         "html": '<p>Plain <a href="https://shop.example/a">see A</a></p>'},
        {"subject": "Subject B", "from_name": "Ana",
         "html": '<p>Bold <a href="https://shop.example/b">see B</a></p>'},
    ])
    return campaign_id


def _variants_by_email(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> dict[str, str | None]:
    with tenant_tx(tenant_id) as database:
        return dict(database.execute_sql(
            "SELECT email, variant FROM messages WHERE campaign_id = %s", (str(campaign_id),)))


def _subject_variant(message) -> str:  # type: ignore[no-untyped-def]
    return str(message["Subject"]).removeprefix("Subject ")


def _tracking_paths(message) -> list[str]:  # type: ignore[no-untyped-def]
    html = message.get_body(("html",)).get_content()
    return TRACKING_PATH.findall(html)


def test_a_test_then_the_winner_through_the_real_pipeline(tenant_a, sending, sink,
                                                          tracking) -> None:
    park_other_tenants_work(tenant_a.id)
    settings, plugins, worker = sending
    client, drainer = tracking
    campaign_id = _ab_campaign(tenant_a.id, 40, "clicks")
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    # The test phase: half the audience, split between A and B; the rest waits.
    assert sink.handler.count() == 20
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("waiting", None)] == 20
    assert rows[("accepted", "A")] == rows[("accepted", "B")] == 10
    assert winner(tenant_a.id, campaign_id) == (None, None)
    got = _variants_by_email(tenant_a.id, campaign_id)
    test_messages = sink.handler.messages()
    for message in test_messages:
        variant = got[str(message["To"])]
        assert _subject_variant(message) == variant
        assert (f"shop.example/{variant.lower()}" in message.get_body(("html",)).get_content()
                or "/t/c/" in message.get_body(("html",)).get_content())
        assert ("Ana" in str(message["From"])) == (variant == "B")
    # Engagement through the public tracking endpoints: every A message is opened by a
    # privacy proxy and clicked by a scanner (machine); three B messages by people.
    humans = 0
    for message in test_messages:
        paths = _tracking_paths(message)
        opens = [p for p in paths if p.startswith("/t/o/")]
        clicks = [p for p in paths if p.startswith("/t/c/")]
        assert opens and clicks
        if got[str(message["To"])] == "A":
            assert client.simulate_get(opens[0], headers={"User-Agent": "Mozilla/5.0"},
                                       remote_addr="17.58.0.1").status_code == 200
            assert client.simulate_get(clicks[0],
                                       headers={"User-Agent": SCANNER}).status_code == 302
        elif humans < 3:
            humans += 1
            for path in (opens[0], clicks[0], clicks[0]):
                client.simulate_get(path, headers={"User-Agent": HUMAN_BROWSER})
    while drainer.drain_once():
        pass
    shown = _show(tenant_a.id, campaign_id)
    assert shown["phase"] == "testing" and shown["waiting"] == 20
    a, b = shown["variants"]
    assert (a["recipients"], a["delivered"], a["unique_opens"], a["unique_clicks"]) == (10, 10, 0, 0)
    assert (b["recipients"], b["delivered"], b["unique_opens"], b["unique_clicks"]) == (10, 10, 3, 3)
    assert b["click_rate"]["value"] == 0.3
    assert 0.0 < b["click_rate"]["low"] < 0.3 < b["click_rate"]["high"] < 1.0
    # decide_after passes: the tick picks B by human clicks, the rest is sent B.
    backdate(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    assert winner(tenant_a.id, campaign_id) == ("B", "clicks")
    assert sink.handler.count() == 40
    assert max(sink.handler.per_recipient.values()) == 1
    got = _variants_by_email(tenant_a.id, campaign_id)
    assert len(got) == 40 and Counter(got.values()) == {"A": 10, "B": 30}
    for message in sink.handler.messages():
        assert _subject_variant(message) == got[str(message["To"])]
    assert ledger(tenant_a.id, campaign_id) == {("accepted", "A"): 10, ("accepted", "B"): 30}
    with tenant_tx(tenant_a.id) as database:
        status = database.execute_sql("SELECT status FROM campaigns WHERE id = %s",
                                      (str(campaign_id),)).fetchone()[0]
        links = {url for (url,) in database.execute_sql(
            "SELECT url FROM links WHERE campaign_id = %s", (str(campaign_id),))}
    assert status == "sent"
    assert links == {"https://shop.example/a", "https://shop.example/b"}
    # "View in browser" renders each row's own variant.
    composer = Composer(settings, plugins)
    with tenant_tx(tenant_a.id) as database:
        rows_by_variant = dict(database.execute_sql(
            "SELECT variant, min(id) FROM messages WHERE campaign_id = %s GROUP BY variant",
            (str(campaign_id),)).fetchall())
    with system_tx() as database:
        assert "Plain" in composer.sent_html(database, tenant_a.id, rows_by_variant["A"])
        assert "Bold" in composer.sent_html(database, tenant_a.id, rows_by_variant["B"])
    final = _show(tenant_a.id, campaign_id)
    assert (final["phase"], final["winner"], final["decided_by"]) == ("decided", "B", "clicks")
    assert final["variants"][1]["recipients"] == 30
    # What B won on: the test phase alone.
    assert final["decided_on"]["A"]["unique_clicks"] == 0
    assert (final["decided_on"]["B"]["recipients"], final["decided_on"]["B"]["unique_clicks"]) == (
        10, 3)
    assert final["decided_on"]["B"]["click_rate"]["value"] == 0.3


def _show(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> dict:
    with tenant_tx(tenant_id):
        return show(tenant_id, campaign_id)


def test_pause_and_a_crashed_worker_in_the_test_phase(tenant_a, sending, sink) -> None:
    park_other_tenants_work(tenant_a.id)
    settings, plugins, worker = sending
    campaign_id = _ab_campaign(tenant_a.id, 60, "opens")
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    sweeper.tick(settings, plugins)  # the ledger: 30 in the test, 30 waiting
    # A worker claims ten test rows and dies before sending them.
    crashed = outbox.claim_batch("crashed-worker", limit=10)
    assert len(crashed) == 10 and {row.variant for row in crashed} <= {"A", "B"}
    worker.drain(30)
    assert sink.handler.count() == 20
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    with system_tx() as database:  # the dead worker's lease runs out
        database.execute_sql("UPDATE messages SET lease_expires_at = now() - interval '1 second' "
                             "WHERE lease_owner = 'crashed-worker' AND status = 'sending'")
    backdate(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    # Paused: nothing is sent and nothing is decided; the reclaimed rows wait as held.
    assert sink.handler.count() == 20
    assert winner(tenant_a.id, campaign_id) == (None, None)
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("waiting", None)] == 30
    assert rows[("held", "A")] + rows[("held", "B")] == 10
    # One human open for a B message that went out.
    sent_b = next(m for m in sink.handler.messages() if _subject_variant(m) == "B")
    with tenant_tx(tenant_a.id) as database:
        ledger_id = database.execute_sql(
            "SELECT id FROM messages WHERE campaign_id = %s AND email = %s",
            (str(campaign_id), str(sent_b["To"]))).fetchone()[0]
        app_db.execute_sql(
            "INSERT INTO engagement_firsts (tenant_id, message_id, metric, campaign_id, first_at) "
            "VALUES (%s, %s, 'opened.human', %s, now())",
            (str(tenant_a.id), ledger_id, str(campaign_id)))
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    assert winner(tenant_a.id, campaign_id) == ("B", "opens")
    assert sink.handler.count() == 60
    assert max(sink.handler.per_recipient.values()) == 1
    got = _variants_by_email(tenant_a.id, campaign_id)
    for message in sink.handler.messages():
        assert _subject_variant(message) == got[str(message["To"])]
    # The crashed worker's rows went out with the variant they were drawn.
    assert all(got[row.email] == row.variant for row in crashed)
    rows = ledger(tenant_a.id, campaign_id)
    assert sum(rows.values()) == 60 and rows[("accepted", "B")] >= 30
    # Its late answer finds the rows sent by another attempt and changes nothing.
    assert outbox.record_results(crashed, []) == {}


def test_a_winner_chosen_while_paused_waits_for_the_resume(tenant_a, sending, sink) -> None:
    from swiftmail_core.ab_tests.decision import choose_winner

    park_other_tenants_work(tenant_a.id)
    settings, plugins, worker = sending
    campaign_id = _ab_campaign(tenant_a.id, 20, "manual")
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    assert sink.handler.count() == 10
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    assert choose_winner(tenant_a.id, campaign_id, "A") == 10
    _run(settings, plugins, worker)
    assert sink.handler.count() == 10
    assert ledger(tenant_a.id, campaign_id)[("held", "A")] == 10
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    _run(settings, plugins, worker)
    assert sink.handler.count() == 20 and max(sink.handler.per_recipient.values()) == 1
    got = _variants_by_email(tenant_a.id, campaign_id)
    assert Counter(got.values())["A"] == 15


def test_a_test_send_of_one_variant(tenant_a, sending, sink) -> None:
    park_other_tenants_work(tenant_a.id)
    _, _, worker = sending
    campaign_id = _ab_campaign(tenant_a.id, 2, "opens")  # still a draft
    (ledger_id,) = lifecycle.test_send(tenant_a.id, campaign_id, ["qa@else.test"], "B")
    worker.drain(10)
    (message,) = [m for m in sink.handler.messages() if str(m["To"]) == "qa@else.test"]
    assert (str(message["Subject"]), "Ana" in str(message["From"])) == ("Subject B", True)
    html = message.get_body(("html",)).get_content()
    assert "Bold" in html and "/t/c/" in html and "shop.example" not in html
    with tenant_tx(tenant_a.id) as database:
        assert database.execute_sql(
            "SELECT kind, variant, status FROM messages WHERE id = %s", (ledger_id,)
        ).fetchone() == ("test", "B", "accepted")
        assert database.execute_sql(
            "SELECT count(*) FROM links WHERE campaign_id = %s AND url = 'https://shop.example/b'",
            (str(campaign_id),)).fetchone()[0] == 1
