"""Journey emails are tracked like campaign mail: opens and clicks through the public endpoints.

Sent through the real worker to an SMTP sink, opened and clicked through
the public tracking app, stored by the drainer: the clicks and opens count
in the journey's stats and decide the "clicked/opened the previous email"
branch (a link scanner's click does not).
"""

from __future__ import annotations

import re

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.journeys import runner
from swiftmail_core.journeys.enrollment import enroll_event
from swiftmail_core.journeys.stats import journey_stats
from swiftmail_core.sending.compose import Composer
from tests.core.journeys.conftest import SENDER, journey_mail, make_contact, make_due, make_journey
from tests.core.sending.conftest import cancel_leftover_work, park_other_tenants_work
from tests.core.sending.test_ab_pipeline import (  # noqa: F401 (fixtures)
    HUMAN_BROWSER,
    SCANNER,
    _run,
    _tracking_paths,
    sending,
    sink,
    tracking,
)

SHOP = "https://shop.example/journey?item=1&from=mail"


def _email(step_id: str, html: str) -> dict:  # type: ignore[type-arg]
    return {"id": step_id, "type": "send_email", "from_email": SENDER,
            "subject": f"{step_id} {{{{ contact.email }}}}", "html": html}


def test_clicks_and_opens_on_journey_emails_count_and_branch(  # type: ignore[no-untyped-def]
        tenant_a, sending, sink, tracking, monkeypatch) -> None:  # noqa: F811 (fixtures)
    park_other_tenants_work(tenant_a.id)
    settings, plugins, worker = sending
    client, drainer = tracking
    monkeypatch.setattr(runner, "DEFAULT_TRANSPORT", "sink")
    journey = make_journey(tenant_a.id, [
        _email("welcome", f'<p>Hi <a href="{SHOP}">see the shop</a> '
                          '<a href="https://shop.example/help">help</a></p>'),
        {"type": "wait", "seconds": 3600},
        {"id": "clicked", "type": "branch", "previous_email": "clicked", "then": "thanks"},
        _email("nudge", "<p>Did you see the shop?</p>"), {"type": "exit"},
        _email("thanks", "<p>Thanks for looking</p>")])
    people = {name: make_contact(tenant_a.id, f"{name}@click.test")
              for name in ("clicker", "opener", "scanned")}
    try:
        for contact in people.values():
            with tenant_tx(tenant_a.id) as database:
                enroll_event(database, tenant_a.id, "signup", contact, {})
        runner.run_due()
        _run(settings, plugins, worker)
        assert sink.handler.count() == 3
        for message in sink.handler.messages():
            who = str(message["To"]).split("@")[0]
            paths = _tracking_paths(message)
            opens = [path for path in paths if path.startswith("/t/o/")]
            clicks = [path for path in paths if path.startswith("/t/c/")]
            assert len(opens) == 1 and len(clicks) == 2, who  # both links rewritten
            assert SHOP not in message.get_body(("html",)).get_content()
            if who == "clicker":
                client.simulate_get(opens[0], headers={"User-Agent": HUMAN_BROWSER})
                for _ in range(2):  # two clicks on one email: one unique click
                    answer = client.simulate_get(clicks[0],
                                                 headers={"User-Agent": HUMAN_BROWSER})
                    assert answer.status_code == 302
                    assert answer.headers["location"] == SHOP
            elif who == "opener":
                client.simulate_get(opens[0], headers={"User-Agent": HUMAN_BROWSER})
            else:
                assert client.simulate_get(
                    clicks[0], headers={"User-Agent": SCANNER}).status_code == 302
        while drainer.drain_once():
            pass
        with tenant_tx(tenant_a.id) as database:
            stats = journey_stats(database, tenant_a.id, journey)
            links = {url for (url,) in database.execute_sql(
                "SELECT url FROM links WHERE journey_id = %s", (str(journey),))}
        welcome = stats["steps"][0]
        assert (welcome["step_id"], welcome["opened"], welcome["clicked"]) == ("welcome", 2, 1)
        assert links == {SHOP, "https://shop.example/help"}
        make_due(tenant_a.id)
        runner.run_due()
        sent = {name: [m["step_id"] for m in journey_mail(tenant_a.id, contact)]
                for name, contact in people.items()}
        assert sent == {"clicker": ["welcome", "thanks"], "opener": ["welcome", "nudge"],
                        "scanned": ["welcome", "nudge"]}
        # "View in browser" renders a journey email with its tracked links too.
        with tenant_tx(tenant_a.id) as database:
            (ledger_id,) = database.execute_sql(
                "SELECT min(id) FROM messages WHERE contact_id = %s",
                (people["clicker"],)).fetchone()
        with system_tx() as database:
            html = Composer(settings, plugins).sent_html(database, tenant_a.id, ledger_id)
        assert "/t/c/" in html and SHOP not in html
    finally:
        cancel_leftover_work(tenant_a.id)


def test_a_journey_email_queued_before_links_were_tracked_keeps_its_links(  # type: ignore[no-untyped-def]
        tenant_a, sending) -> None:  # noqa: F811 (the fixture imported above)
    settings, plugins, _ = sending
    contact = make_contact(tenant_a.id, "old@click.test")
    with tenant_tx(tenant_a.id) as database:
        (ledger_id,) = database.execute_sql(
            "INSERT INTO messages (tenant_id, contact_id, email, kind, transport, payload, status) "
            "VALUES (%s, %s, 'old@click.test', 'journey', 'sink', %s::jsonb, 'accepted') "
            "RETURNING id",
            (str(tenant_a.id), contact,
             '{"subject": "Old", "html": "<a href=\\"https://old.example/x\\">x</a>", '
             '"text": "", "from_email": "news@sender.test", "journey_id": null}')).fetchone()
    with system_tx() as database:
        html = Composer(settings, plugins).sent_html(database, tenant_a.id, ledger_id)
    assert "https://old.example/x" in html and re.search(r"/t/o/", html)
