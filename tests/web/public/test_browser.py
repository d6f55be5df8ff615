"""Subscriber pages driven in a real headless Chromium, with screenshots kept.

Uses Debian's ``chromium`` (``/usr/bin/chromium``) through the ``playwright``
package's driver; no browser download. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import threading
import uuid
import wsgiref.simple_server
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn

import pytest

from swiftmail_core import tokens
from swiftmail_core.db import app_db, tenant_tx
from tests.core.tracking.conftest import make_sent_message

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/system-packages)"
)


class _ThreadingServer(ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.fixture
def base_url(public_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The public app served over real HTTP on loopback."""
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, public_app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page() -> Iterator:  # type: ignore[type-arg]
    """A phone-sized page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport=PHONE, java_script_enabled=False)
        yield context.new_page()
        context.close()
        browser.close()


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"public-{name}.png"), full_page=True)


def _accessible(page) -> None:  # type: ignore[no-untyped-def]
    """Check the basics: language, viewport fit, labelled controls, no external loads."""
    assert page.locator("html").get_attribute("lang")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for control in page.locator("input:not([type=hidden]), button").all():
        if control.get_attribute("tabindex") == "-1":
            continue  # the honeypot, hidden from people and assistive tech
        ident = control.get_attribute("id")
        tag = control.evaluate("e => e.tagName")
        if tag == "BUTTON":
            assert control.inner_text().strip()
        else:
            assert page.locator(f"label[for='{ident}']").count() == 1, ident


def _status(m) -> str:  # type: ignore[no-untyped-def]
    with tenant_tx(m.tenant_id):
        return app_db.execute_sql(
            "SELECT status FROM subscriptions WHERE list_id = %s AND contact_id = %s",
            (str(m.list_id), str(m.contact_id))).fetchone()[0]


def test_unsubscribe_page_in_a_browser(page, base_url, settings, tenant_a) -> None:  # type: ignore[no-untyped-def]
    m = make_sent_message(tenant_a.id)
    token = tokens.make_unsubscribe_token(settings.secret_key, m.tenant_id, m.contact_id,
                                          m.list_id)
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url)
            if not r.url.startswith(base_url) else None)
    page.goto(f"{base_url}/u/{token}")
    _accessible(page)
    _shot(page, "unsubscribe")
    assert _status(m) == "confirmed"  # viewing changed nothing
    page.click("#unsubscribe")
    page.wait_for_selector("h1[role=status]")
    _shot(page, "unsubscribed")
    assert _status(m) == "unsubscribed"
    assert page.context.cookies() == []
    assert external == []


def test_preference_centre_in_a_browser(page, base_url, settings, tenant_a) -> None:  # type: ignore[no-untyped-def]
    m = make_sent_message(tenant_a.id)
    token = tokens.make_preferences_token(settings.secret_key, m.tenant_id, m.contact_id)
    page.goto(f"{base_url}/p/{token}")
    _accessible(page)
    _shot(page, "preferences")
    page.uncheck("#list-1")
    page.click("#save")
    page.wait_for_selector(".notice")
    assert _status(m) == "unsubscribed"
    page.check("#list-1")
    page.click("#save")
    page.wait_for_selector(".notice")
    assert _status(m) == "confirmed"
    page.click("#unsubscribe-all")
    page.wait_for_selector(".notice")
    _shot(page, "preferences-saved")
    with tenant_tx(m.tenant_id):
        assert app_db.execute_sql("SELECT count(*) FROM suppressions").fetchone()[0] == 1


def test_double_opt_in_and_signup_in_a_browser(page, base_url, settings, tenant_a) -> None:  # type: ignore[no-untyped-def]
    list_id = uuid.uuid4()
    with tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO lists (tenant_id, id, name, description, double_opt_in) "
            "VALUES (%s, %s, 'Weekly news', 'One email a week.', true)",
            (str(tenant_a.id), str(list_id)),
        )
    page.goto(f"{base_url}/subscribe/{tenant_a.slug}/{list_id}")
    _accessible(page)
    _shot(page, "subscribe")
    page.fill("#email", "reader@example.com")
    page.fill("#name", "Reader")
    page.click("#subscribe")
    page.wait_for_selector("h1[role=status]")
    with tenant_tx(tenant_a.id):
        contact_id, status = app_db.execute_sql(
            "SELECT contact_id, status FROM subscriptions WHERE list_id = %s", (str(list_id),)
        ).fetchone()
    assert status == "unconfirmed"
    token = tokens.make_confirm_token(settings.secret_key, tenant_a.id, contact_id, list_id)
    page.goto(f"{base_url}/confirm/{token}")
    _accessible(page)
    _shot(page, "confirm")
    page.click("#confirm")
    page.wait_for_selector("h1[role=status]")
    _shot(page, "confirmed")
    with tenant_tx(tenant_a.id):
        assert app_db.execute_sql(
            "SELECT status FROM subscriptions WHERE list_id = %s", (str(list_id),)
        ).fetchone()[0] == "confirmed"
