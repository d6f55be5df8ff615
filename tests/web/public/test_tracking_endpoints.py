"""Open pixel and click redirect: signed tokens, no open redirect, hits queued."""

from __future__ import annotations

import pytest
from swiftmail_web.public.tracking import PIXEL, safe_destination

from swiftmail_core import tokens
from tests.core.tracking.conftest import make_sent_message


def _tamper(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


def test_pixel_answers_a_gif_for_any_token_and_records_valid_ones(
    public_client, settings, sent_message, hit_stream
) -> None:
    m = sent_message
    good = tokens.make_open_token(settings.secret_key, m.tenant_id, m.message_id)
    for token in (good, _tamper(good), good[:-3], "garbage", "x" * 500):
        result = public_client.simulate_get(f"/t/o/{token}.gif")
        assert result.status_code == 200
        assert result.headers["content-type"] == "image/gif"
        assert result.content == PIXEL
        assert "no-store" in result.headers["cache-control"]
    entries = hit_stream.read_new("probe", 100, 10)
    assert len(entries) == 1
    assert entries[0][1][b"m"] == str(m.message_id).encode()


@pytest.mark.parametrize("mutate", ["altered", "truncated", "extended", "open_token"])
def test_bad_click_tokens_never_redirect(public_client, settings, sent_message, mutate,
                                         hit_stream) -> None:
    m = sent_message
    good = tokens.make_click_token(settings.secret_key, m.tenant_id, m.link_id, m.message_id)
    token = {
        "altered": _tamper(good),
        "truncated": good[:-4],
        "extended": good + "AA",
        "open_token": tokens.make_open_token(settings.secret_key, m.tenant_id, m.message_id),
    }[mutate]
    result = public_client.simulate_get(f"/t/c/{token}", params={"dest": "https://evil.test/"})
    assert result.status_code == 404
    assert "location" not in result.headers
    assert "evil.test" not in result.text
    assert hit_stream.read_new("probe", 10, 10) == []


def test_click_redirects_only_to_the_stored_link(public_client, settings, sent_message,
                                                 hit_stream) -> None:
    m = sent_message
    token = tokens.make_click_token(settings.secret_key, m.tenant_id, m.link_id, m.message_id)
    result = public_client.simulate_get(f"/t/c/{token}", params={"dest": "https://evil.test/"})
    assert result.status_code == 302
    assert result.headers["location"] == "https://example.com/landing"
    entries = hit_stream.read_new("probe", 10, 10)
    assert [fields[b"l"] for _, fields in entries] == [str(m.link_id).encode()]


def test_foreign_link_ids_do_not_resolve(public_client, settings, tenant_a, tenant_b) -> None:
    mine = make_sent_message(tenant_a.id, url="https://a.example/")
    theirs = make_sent_message(tenant_b.id, url="https://b.example/secret")
    # A correctly signed token of tenant A naming tenant B's link id.
    token = tokens.make_click_token(settings.secret_key, tenant_a.id, theirs.link_id,
                                    mine.message_id)
    result = public_client.simulate_get(f"/t/c/{token}")
    assert result.status_code == 404
    assert "location" not in result.headers
    # Tenant B's token signed with another install's key is refused too.
    other_key = "another-install-secret-key-" + "y" * 32
    foreign = tokens.make_click_token(other_key, tenant_b.id, theirs.link_id, theirs.message_id)
    assert public_client.simulate_get(f"/t/c/{foreign}").status_code == 404


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>x</script>",
    "vbscript:x", "//evil.test/", "https://ok.example/\r\nSet-Cookie: x=1", "", None,
    "https:///nohost", "file:///etc/passwd",
])
def test_unsafe_destinations_are_refused(url) -> None:  # type: ignore[no-untyped-def]
    assert safe_destination(url) is None


def test_dangerous_schemes_cannot_be_stored(tenant_a) -> None:
    import peewee

    from swiftmail_core.db import app_db, tenant_tx

    with pytest.raises(peewee.IntegrityError), tenant_tx(tenant_a.id):
        app_db.execute_sql("INSERT INTO links (tenant_id, url) VALUES (%s, 'javascript:x')",
                           (str(tenant_a.id),))


def test_public_routes_need_no_auth_in_the_api_app(client) -> None:  # type: ignore[no-untyped-def]
    pixel = client.simulate_get("/t/o/not-a-token.gif")
    assert pixel.status_code == 200 and pixel.content == PIXEL
    page = client.simulate_get("/u/not-a-token")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert client.simulate_get("/v1/analytics/tenant").status_code == 401


@pytest.mark.parametrize(("url", "location"), [
    ("https://example.com/über?q=ü", "https://example.com/%C3%BCber?q=%C3%BC"),
    ("https://exämple.com/café", "https://xn--exmple-cua.com/caf%C3%A9"),
    ("https://example.com/a%20b", "https://example.com/a%20b"),
])
def test_non_ascii_destinations_redirect_as_utf8_uris(public_client, settings, tenant_a,
                                                      url: str, location: str) -> None:
    # Regression: a link with non-ASCII characters was a 500 ("Invalid response header").
    m = make_sent_message(tenant_a.id, url=url)
    token = tokens.make_click_token(settings.secret_key, m.tenant_id, m.link_id, m.message_id)
    result = public_client.simulate_get(f"/t/c/{token}")
    assert result.status_code == 302 and result.headers["location"] == location


def test_a_stalled_redis_does_not_hold_up_the_visitor(settings, runtime, sent_message) -> None:  # type: ignore[no-untyped-def]
    # Regression: a Redis that accepts connections but never answers made every pixel
    # and click wait (5 s and more); now the visitor is answered and the hit logged.
    import socket
    import threading

    import falcon.testing
    import redis
    from swiftmail_web.public import create_tracking_app
    from swiftmail_web.public.services import PublicConfig, PublicServices

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(16)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: [held.append(stalled.accept()[0])
                                                 for _ in range(8)], daemon=True)
    accepting.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=stalled.getsockname()[1])
        services = PublicServices.build(settings, client, runtime.plugins,
                                        PublicConfig(stream="stalled", redis_timeout_ms=50))
        app = falcon.testing.TestClient(create_tracking_app(services))
        m = sent_message
        pixel = app.simulate_get(
            f"/t/o/{tokens.make_open_token(settings.secret_key, m.tenant_id, m.message_id)}.gif")
        assert pixel.status_code == 200 and pixel.content == PIXEL
        click = app.simulate_get(
            f"/t/c/{tokens.make_click_token(settings.secret_key, m.tenant_id, m.link_id, m.message_id)}")
        assert click.status_code == 302
    finally:
        for connection in held:
            connection.close()
        stalled.close()
