"""Unsubscribe, one-click, preferences, double opt-in, sign-up and web view."""

from __future__ import annotations

import email
import re
import urllib.parse
import uuid

from swiftmail_core import tokens
from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.rendering import CampaignRenderer, links_in
from swiftmail_core.tracking_ingest.drainer import Drainer
from tests.core.tracking.conftest import make_sent_message

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def state(m) -> dict:  # type: ignore[no-untyped-def]
    with tenant_tx(m.tenant_id):
        subscription = app_db.execute_sql(
            "SELECT status FROM subscriptions WHERE list_id = %s AND contact_id = %s",
            (str(m.list_id), str(m.contact_id)),
        ).fetchone()[0]
        suppressed = app_db.execute_sql(
            "SELECT count(*) FROM suppressions WHERE email_lower = lower(%s)", (m.email,)
        ).fetchone()[0]
        contact = app_db.execute_sql(
            "SELECT status FROM contacts WHERE id = %s", (str(m.contact_id),)
        ).fetchone()[0]
        events = app_db.execute_sql(
            "SELECT count(*) FROM events WHERE type = 'unsubscribed'"
        ).fetchone()[0]
    return {"subscription": subscription, "suppressed": suppressed, "contact": contact,
            "events": events}


def test_unsubscribe_get_changes_nothing_and_post_works_without_cookies(
    public_client, settings, sent_message
) -> None:
    m = sent_message
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id,
                                          m.list_id)
    before = state(m)
    page = public_client.simulate_get(f"/u/{token}")
    assert page.status_code == 200
    assert "set-cookie" not in page.headers
    assert m.email in page.text and 'method="post"' in page.text
    assert state(m) == before
    done = public_client.simulate_post(f"/u/{token}", body="action=unsubscribe", headers=FORM)
    assert done.status_code == 200
    assert "set-cookie" not in done.headers
    assert "unsubscribed" in done.text
    after = state(m)
    assert after["subscription"] == "unsubscribed"
    assert after["events"] == 1
    # A second POST is harmless and records nothing more.
    public_client.simulate_post(f"/u/{token}", body="action=unsubscribe", headers=FORM)
    assert state(m)["events"] == 1


def test_tampered_unsubscribe_tokens_are_refused(public_client, settings, tenant_a,
                                                 tenant_b) -> None:
    mine = make_sent_message(tenant_a.id)
    other = make_sent_message(tenant_b.id)
    good = tokens.make_unsubscribe_token(settings.secret_key, mine.tenant_id, mine.contact_id,
                                         mine.list_id)
    # Another tenant's token naming my contact, and my token for their contact.
    crossed = [
        tokens.make_unsubscribe_token(settings.secret_key, tenant_b.id, mine.contact_id,
                                      mine.list_id),
        tokens.make_unsubscribe_token(settings.secret_key, tenant_a.id, other.contact_id,
                                      other.list_id),
    ]
    for token in [good[:-2], good[:10] + ("A" if good[10] != "A" else "B") + good[11:],
                  *crossed]:
        assert public_client.simulate_get(f"/u/{token}").status_code == 404
        result = public_client.simulate_post(f"/u/{token}", body="action=unsubscribe",
                                             headers=FORM)
        assert result.status_code == 404
    assert state(mine)["subscription"] == "confirmed"
    assert state(other)["subscription"] == "confirmed"


def test_rfc8058_one_click_from_a_sent_messages_headers(
    public_client, settings, tenant_a, hit_stream
) -> None:
    m = make_sent_message(tenant_a.id, url="https://shop.example.com/deal")
    with tenant_tx(m.tenant_id):
        app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, status) "
            "VALUES (%s, %s, %s, %s, 'test', 'queued')",
            (str(m.tenant_id), str(m.campaign_id), str(m.contact_id), m.email),
        )
    campaign = {"id": m.campaign_id, "name": "Deals", "subject": "Deals",
                "html": '<html><body><p>Hi</p><a href="https://shop.example.com/deal">Deal</a>'
                        "</body></html>",
                "text": "", "from_name": "Shop", "from_email": "news@shop.example.com",
                "tracking_enabled": True}
    renderer = CampaignRenderer(
        campaign, {"id": m.tenant_id, "name": "Shop", "slug": "shop"}, None, settings, None,
        {"https://shop.example.com/deal": m.link_id},
    )
    assert links_in(campaign["html"]) == ["https://shop.example.com/deal"]
    rendered = renderer.render(m.message_id, {"id": m.contact_id, "email": m.email,
                                              "name": "", "attributes": {}}, m.list_id)
    message = email.message_from_bytes(rendered.raw)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = re.search(r"<(https?://[^>]+)>", message["List-Unsubscribe"]).group(1)
    path = urllib.parse.urlsplit(https).path
    # What a mailbox provider does: POST the body, no cookies, no page.
    result = public_client.simulate_post(path, body="List-Unsubscribe=One-Click", headers=FORM)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert state(m)["subscription"] == "unsubscribed"
    # Pixel and click URLs from the same message are recorded as one open and one click.
    html = next(part for part in message.walk() if part.get_content_type() == "text/html")
    body = html.get_payload(decode=True).decode()
    pixel = re.search(r'src="https?://[^"]+(/t/o/[^"]+\.gif)"', body).group(1)
    click = re.search(r'href="https?://[^"]+(/t/c/[^"]+)"', body).group(1)
    agent = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"}
    assert public_client.simulate_get(pixel, headers=agent).status_code == 200
    redirect = public_client.simulate_get(click, headers=agent)
    assert redirect.headers["location"] == "https://shop.example.com/deal"
    Drainer(hit_stream, "pages-test", block_ms=10).drain_once()
    with tenant_tx(m.tenant_id):
        kinds = app_db.execute_sql(
            "SELECT type, is_machine FROM events WHERE message_id = %s ORDER BY type",
            (m.message_id,)).fetchall()
    assert kinds == [("clicked", False), ("opened", False)]


def test_unsubscribe_cancels_unclaimed_mail_before_the_next_claim(
    public_client, settings, tenant_a
) -> None:
    m = make_sent_message(tenant_a.id)
    with tenant_tx(m.tenant_id):
        next_campaign = uuid.uuid4()
        app_db.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name, status, list_ids) "
            "VALUES (%s, %s, 'Next', 'sending', %s::uuid[])",
            (str(m.tenant_id), str(next_campaign), [str(m.list_id)]),
        )
        queued = app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (str(m.tenant_id), str(next_campaign), str(m.contact_id), m.email),
        ).fetchone()[0]
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id, None)
    public_client.simulate_post(f"/u/{token}", body="List-Unsubscribe=One-Click", headers=FORM)
    with tenant_tx(m.tenant_id):
        status = app_db.execute_sql("SELECT status FROM messages WHERE id = %s",
                                    (queued,)).fetchone()[0]
    assert status == "cancelled"
    after = state(m)
    assert after["suppressed"] == 1 and after["contact"] == "unsubscribed"


def test_preference_centre_per_list_and_everything(public_client, settings, sent_message) -> None:
    m = sent_message
    token = tokens.make_preferences_token(settings.secret_key, m.tenant_id, m.contact_id)
    page = public_client.simulate_get(f"/p/{token}")
    assert page.status_code == 200 and "checked" in page.text
    saved = public_client.simulate_post(f"/p/{token}", body="action=save", headers=FORM)
    assert "saved" in saved.text
    assert state(m)["subscription"] == "unsubscribed"
    public_client.simulate_post(f"/p/{token}", body=f"action=save&list={m.list_id}",
                                headers=FORM)
    assert state(m)["subscription"] == "confirmed"
    public_client.simulate_post(f"/p/{token}", body="action=unsubscribe_all", headers=FORM)
    assert state(m)["suppressed"] == 1
    assert public_client.simulate_get(f"/p/{token[:-1]}").status_code == 404


def test_double_opt_in_get_asks_and_post_confirms(public_client, settings, sent_message) -> None:
    m = sent_message
    with tenant_tx(m.tenant_id):
        app_db.execute_sql("UPDATE subscriptions SET status = 'unconfirmed' WHERE list_id = %s",
                           (str(m.list_id),))
    token = tokens.make_confirm_token(settings.secret_key, m.tenant_id, m.contact_id, m.list_id)
    assert 'id="confirm"' in public_client.simulate_get(f"/confirm/{token}").text
    assert state(m)["subscription"] == "unconfirmed"
    done = public_client.simulate_post(f"/confirm/{token}")
    assert done.status_code == 200 and "confirmed" in done.text.lower()
    assert state(m)["subscription"] == "confirmed"


def test_signup_form_honeypot_and_per_ip_limit(public_client, tenant_a) -> None:
    list_id = uuid.uuid4()
    with tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO lists (tenant_id, id, name, double_opt_in) VALUES (%s, %s, 'News', true)",
            (str(tenant_a.id), str(list_id)),
        )
    path = f"/subscribe/{tenant_a.slug}/{list_id}"
    assert 'name="website"' in public_client.simulate_get(path).text
    ok = public_client.simulate_post(path, body="email=new%40example.com&name=New&website=",
                                     headers=FORM)
    assert ok.status_code == 200 and "inbox" in ok.text
    bot = public_client.simulate_post(path, body="email=bot%40example.com&website=spam",
                                      headers=FORM)
    assert bot.status_code == 200
    bad = public_client.simulate_post(path, body="email=not-an-address", headers=FORM)
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text
    limited = public_client.simulate_post(path, body="email=x%40example.com", headers=FORM)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    with tenant_tx(tenant_a.id):
        rows = app_db.execute_sql(
            "SELECT c.email, s.status, c.id FROM subscriptions s JOIN contacts c ON c.tenant_id = "
            "s.tenant_id AND c.id = s.contact_id WHERE s.list_id = %s", (str(list_id),),
        ).fetchall()
    assert [row[:2] for row in rows] == [("new@example.com", "unconfirmed")]
    assert uuid.UUID(str(rows[0][2])).version == 7  # in creation order (contact_ids)
    # The double opt-in email is in the ledger (one, despite the bot and the retries),
    # and its link confirms the subscription.
    with tenant_tx(tenant_a.id):
        ledger = app_db.execute_sql(
            "SELECT email, payload->>'confirm_url' FROM messages WHERE kind = 'confirmation'"
        ).fetchall()
    assert [email for email, _ in ledger] == ["new@example.com"]
    confirm_path = urllib.parse.urlsplit(ledger[0][1]).path
    assert public_client.simulate_post(confirm_path).status_code == 200
    with tenant_tx(tenant_a.id):
        assert app_db.execute_sql("SELECT status FROM subscriptions WHERE list_id = %s",
                                  (str(list_id),)).fetchone()[0] == "confirmed"
    assert public_client.simulate_get(f"/subscribe/{tenant_a.slug}/{uuid.uuid4()}").status_code == 404


def test_web_view_renders_the_campaign_without_scripts(public_client, settings,
                                                       sent_message) -> None:
    m = sent_message
    token = tokens.make_view_token(settings.secret_key, m.tenant_id, m.message_id)
    result = public_client.simulate_get(f"/v/{token}")
    assert result.status_code == 200
    assert "Hello from the campaign" in result.text
    assert "script-src" not in result.headers["content-security-policy"]
    assert "default-src 'none'" in result.headers["content-security-policy"]
    assert public_client.simulate_get(f"/v/{token}x").status_code == 404


def test_tenant_can_override_a_page_template(public_client, settings, sent_message) -> None:
    m = sent_message
    with tenant_tx(m.tenant_id):
        app_db.execute_sql(
            "UPDATE tenants SET settings = jsonb_build_object('public_templates', "
            "jsonb_build_object('unsubscribe.html', %s::text)) WHERE id = %s",
            ('{% extends "base.html" %}{% block content %}<h1>Custom bye {{ email }}</h1>'
             '{% endblock %}', str(m.tenant_id)),
        )
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id,
                                          m.list_id)
    assert f"Custom bye {m.email}" in public_client.simulate_get(f"/u/{token}").text


def _single_opt_in_list(tenant_id) -> uuid.UUID:  # type: ignore[no-untyped-def]
    list_id = uuid.uuid4()
    with tenant_tx(tenant_id):
        app_db.execute_sql("INSERT INTO lists (tenant_id, id, name, double_opt_in) "
                           "VALUES (%s, %s, 'Open', false)", (str(tenant_id), str(list_id)))
    return list_id


def _subscription(tenant_id, list_id, email: str) -> str | None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        row = app_db.execute_sql(
            "SELECT s.status FROM subscriptions s JOIN contacts c ON c.tenant_id = s.tenant_id "
            "AND c.id = s.contact_id WHERE s.list_id = %s AND c.email_lower = %s",
            (str(list_id), email)).fetchone()
    return row[0] if row else None


def test_the_form_does_not_resubscribe_someone_who_unsubscribed(public_client, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: the public form re-subscribed an address that had unsubscribed.
    list_id = _single_opt_in_list(tenant_a.id)
    path = f"/subscribe/{tenant_a.slug}/{list_id}"
    body = "email=back%40example.com&website="
    assert public_client.simulate_post(path, body=body, headers=FORM).status_code == 200
    assert _subscription(tenant_a.id, list_id, "back@example.com") == "confirmed"
    with tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE subscriptions SET status = 'unsubscribed' WHERE list_id = %s",
                           (str(list_id),))
    assert public_client.simulate_post(path, body=body, headers=FORM).status_code == 200
    # only a confirmed double opt-in brings them back
    assert _subscription(tenant_a.id, list_id, "back@example.com") == "unconfirmed"


def test_cross_site_form_posts_are_refused_unless_the_tenant_allows_them(public_client,
                                                                        tenant_a) -> None:  # type: ignore[no-untyped-def]
    list_id = _single_opt_in_list(tenant_a.id)
    path = f"/subscribe/{tenant_a.slug}/{list_id}"
    evil = {**FORM, "Origin": "https://evil.example"}
    refused = public_client.simulate_post(path, body="email=v%40example.com", headers=evil)
    assert refused.status_code == 403
    assert _subscription(tenant_a.id, list_id, "v@example.com") is None
    with tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE tenants SET settings = settings || "
                           "'{\"signup_allowed_origins\": [\"https://shop.example\"]}' WHERE id = %s",
                           (str(tenant_a.id),))
    shop = {**FORM, "Origin": "https://shop.example"}
    assert public_client.simulate_post(path, body="email=v%40example.com",
                                       headers=shop).status_code == 200


def test_a_confirm_link_clicked_after_an_unsubscribe_claims_nothing(public_client, settings,
                                                                    sent_message) -> None:  # type: ignore[no-untyped-def]
    m = sent_message
    token = tokens.make_confirm_token(settings.secret_key, m.tenant_id, m.contact_id, m.list_id)
    with tenant_tx(m.tenant_id):
        app_db.execute_sql("UPDATE subscriptions SET status = 'unsubscribed' WHERE list_id = %s",
                           (str(m.list_id),))
    clicked = public_client.simulate_post(f"/confirm/{token}")
    assert clicked.status_code == 409 and "no longer valid" in clicked.text
    assert state(m)["subscription"] == "unsubscribed"


def test_the_web_view_shows_what_was_sent_and_fails_safe(public_client, settings,
                                                         sent_message) -> None:  # type: ignore[no-untyped-def]
    # Regression: the web view rendered with another context and no limits: {{ tenant.name }}
    # showed as raw source, unsubscribe links were empty, a heavy template took seconds.
    m = sent_message
    with tenant_tx(m.tenant_id):
        app_db.execute_sql(
            "UPDATE campaigns SET html = %s WHERE id = %s",
            ('<p>From {{ tenant.name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
             str(m.campaign_id)))
        tenant_name = app_db.execute_sql("SELECT name FROM tenants").fetchone()[0]
    token = tokens.make_view_token(settings.secret_key, m.tenant_id, m.message_id)
    page = public_client.simulate_get(f"/v/{token}")
    assert page.status_code == 200
    assert f"From {tenant_name}" in page.text and "{{" not in page.text
    assert "/u/" in page.text  # a real one-click unsubscribe link for this recipient
    with tenant_tx(m.tenant_id):
        app_db.execute_sql(
            "UPDATE campaigns SET html = %s, updated_at = now() WHERE id = %s",
            ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
             str(m.campaign_id)))
    heavy = public_client.simulate_get(f"/v/{token}")
    assert heavy.status_code == 200 and "cannot be shown" in heavy.text
    assert len(heavy.text) < 20_000


def test_a_failing_page_override_falls_back_to_the_default_page(public_client, settings,
                                                                 sent_message) -> None:  # type: ignore[no-untyped-def]
    # Regression: a tenant override that failed (or grew huge) made a 500 or a 5 MB page.
    m = sent_message
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id,
                                          m.list_id)
    for source in ('{% extends "base.html" %}{% block content %}{{ 1 / 0 }}{% endblock %}',
                   '{% extends "base.html" %}{% block content %}'
                   '{% for i in range(2000000) %}x{% endfor %}{% endblock %}'):
        with tenant_tx(m.tenant_id):
            app_db.execute_sql(
                "UPDATE tenants SET settings = jsonb_build_object('public_templates', "
                "jsonb_build_object('unsubscribe.html', %s::text)) WHERE id = %s",
                (source, str(m.tenant_id)))
        page = public_client.simulate_get(f"/u/{token}")
        assert page.status_code == 200 and len(page.text) < 100_000


def test_a_slow_page_override_runs_under_the_campaign_time_budget(
        public_client, settings, sent_message, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: overrides rendered without a time limit (7.2 s on every page view).
    from swiftmail_web.public import render

    from swiftmail_core.rendering import RenderLimits

    assert render.PAGE_LIMITS.max_render_seconds == RenderLimits().max_render_seconds
    assert render.PAGE_LIMITS.max_output_chars == render.MAX_PAGE
    # The same limits, with a budget short enough for the suite.
    monkeypatch.setattr(render, "PAGE_LIMITS",
                        RenderLimits(max_output_chars=render.MAX_PAGE, max_render_seconds=0.1),
                        raising=False)
    m = sent_message
    with tenant_tx(m.tenant_id):
        app_db.execute_sql(
            "UPDATE tenants SET settings = jsonb_build_object('public_templates', "
            "jsonb_build_object('unsubscribe.html', %s::text)) WHERE id = %s",
            ('{% extends "base.html" %}{% block content %}<h1>Slow bye</h1>'
             '{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}'
             '{% endblock %}', str(m.tenant_id)))
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id,
                                          m.list_id)
    page = public_client.simulate_get(f"/u/{token}")
    assert page.status_code == 200
    assert "Slow bye" not in page.text       # over budget: the default page
    assert "unsubscribe" in page.text.lower()


def test_page_overrides_are_checked_when_saved(make_caller, tenant_a) -> None:  # type: ignore[no-untyped-def]
    owner = make_caller(tenant_a, "owner")
    for overrides, field in (
            ({"unsubscribe.html": "{% if %}"}, "settings.public_templates.unsubscribe.html"),
            ({"secret.py": "x"}, "settings.public_templates.secret.py"),
            ("not an object", "settings.public_templates")):
        result = owner.patch("/v1/tenant", {"settings": {"public_templates": overrides}})
        assert result.status_code == 422, result.text
        assert result.json["errors"][0]["field"] == field
    fine = owner.patch("/v1/tenant", {"settings": {"public_templates": {
        "unsubscribe.html": '{% extends "base.html" %}{% block content %}Bye{% endblock %}'}}})
    assert fine.status_code == 200, fine.text
