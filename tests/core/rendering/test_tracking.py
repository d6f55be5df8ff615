"""Tracked links, open pixel, opt-outs, tracking off, the visible unsubscribe link."""

from __future__ import annotations

import re

import pytest

from swiftmail_core import tokens
from swiftmail_core.rendering import links_in

from .conftest import SECRET
from .test_mime import _parse, assert_same_message

HREF = re.compile(r'href="([^"]*)"')


def test_links_in_lists_trackable_links_only(campaign) -> None:
    assert links_in(campaign["html"]) == [
        "https://shop.example.com/item?id=1&ref=mail",
        "https://shop.example.com/",
    ]


def test_links_rewritten_to_click_urls_that_verify(make_renderer, campaign, contact, tenant) -> None:
    renderer = make_renderer(campaign)
    parts = renderer.render_parts(4242, contact)
    hrefs = HREF.findall(parts.html)
    clicks = [href for href in hrefs if "/t/c/" in href]
    assert len(clicks) == 3  # two loop items and the shop link
    seen = set()
    for href in clicks:
        assert href.startswith("https://mail.swiftmail.test/t/c/")
        click = tokens.read_click_token(SECRET, href.rsplit("/", 1)[1])
        assert click.tenant_id == tenant["id"] and click.message_id == 4242
        seen.add(click.link_id)
    assert seen == set(renderer.test_link_ids.values())
    # The text part carries the same tracked URLs.
    assert all(href in parts.text for href in clicks)
    assert "shop.example.com/item" not in parts.html


def test_opt_outs_mailto_and_templated_links_are_untouched(make_renderer, campaign, contact) -> None:
    hrefs = HREF.findall(make_renderer(campaign).render_parts(1, contact).html)
    assert "https://example.com/private" in hrefs
    assert "https://example.com/private2" in hrefs
    assert "mailto:help@shop.example.com" in hrefs
    view = [href for href in hrefs if "/v/" in href]
    assert len(view) == 1
    assert tokens.read_view_token(SECRET, view[0].rsplit("/", 1)[1]).message_id == 1


def test_open_pixel_present_and_verifies(make_renderer, campaign, contact, tenant) -> None:
    html = make_renderer(campaign).render_parts(77, contact).html
    (pixel,) = re.findall(r'<img src="https://mail.swiftmail.test/t/o/([^"]+)\.gif"', html)
    assert tokens.read_open_token(SECRET, pixel) == tokens.OpenToken(tenant["id"], 77)
    assert html.index(pixel) > html.index("Shop</a>")  # at the end of the body


def test_tracking_off_leaves_links_and_adds_no_pixel(make_renderer, campaign, contact) -> None:
    campaign["tracking_enabled"] = False
    parts = make_renderer(campaign).render_parts(1, contact)
    assert "/t/c/" not in parts.html and "/t/o/" not in parts.html
    assert "/t/c/" not in parts.text
    assert 'href="https://shop.example.com/item?id=1&amp;ref=mail"' in parts.html
    assert "/u/" in parts.html  # unsubscribe is never optional


def test_tracking_domain_is_used(make_renderer, campaign, contact, sending_domain) -> None:
    sending_domain["tracking_domain"] = "links.shop.example.com"
    html = make_renderer(campaign).render_parts(1, contact).html
    assert "https://links.shop.example.com/t/c/" in html
    assert "https://links.shop.example.com/u/" in html
    assert "mail.swiftmail.test" not in html


def test_unregistered_link_is_a_programming_error(render_settings, tenant, campaign) -> None:
    from swiftmail_core.rendering import CampaignRenderer

    with pytest.raises(ValueError, match="register links_in"):
        CampaignRenderer(campaign, tenant, None, render_settings, None, {})


def test_footer_added_when_template_lacks_unsubscribe(make_renderer, campaign, contact) -> None:
    parts = make_renderer(campaign).render_parts(1, contact)
    assert parts.html.count("/u/") == 1 and "Unsubscribe</a>" in parts.html
    assert "Manage preferences</a>" in parts.html and "/p/" in parts.html


def test_no_footer_when_template_has_unsubscribe(make_renderer, campaign, contact) -> None:
    campaign["html"] = '<html><body><p>Hi</p><a href="{{ unsubscribe_url }}">Leave</a></body></html>'
    campaign["text"] = "Hi. Leave: {{ unsubscribe_url }}"
    parts = make_renderer(campaign).render_parts(1, contact)
    assert "Unsubscribe</a>" not in parts.html and "Leave</a>" in parts.html
    assert parts.html.count("/u/") == 1
    assert "Manage preferences" not in parts.text


def test_text_gets_unsubscribe_when_given_text_lacks_it(make_renderer, campaign, contact) -> None:
    campaign["text"] = "Plain hello"
    text = make_renderer(campaign).render_parts(1, contact).text
    assert "Unsubscribe: https://mail.swiftmail.test/u/" in text


MACRO_HTML = """<html><body>
{% macro button(label) %}<a href="https://shop.example.com/deal">{{ label }}</a>{% endmacro %}
{% set footer %}<a href="https://shop.example.com/help">Help</a>{% endset %}
<p>{{ button("First") }} and {{ button("Second") }}</p>
<p>{{ footer }}</p>
<p>{{ contact.note }}</p>
</body></html>
"""


def _click_links(text: str) -> list[int]:
    return [tokens.read_click_token(SECRET, token).link_id
            for token in re.findall(r"/t/c/([A-Za-z0-9_=-]+)", text)]


def test_links_from_macros_and_set_blocks_are_tracked_on_every_path(
    make_renderer, campaign, contact
) -> None:
    """A tracked link a macro or a ``{% set %}`` block outputs is filled like any other."""
    renderer = make_renderer({**campaign, "html": MACRO_HTML}, clock=lambda: 1_800_000_000)
    deal = renderer.test_link_ids["https://shop.example.com/deal"]
    help_link = renderer.test_link_ids["https://shop.example.com/help"]
    fast = renderer.render(77, contact)
    assert_same_message(fast.raw, renderer.render_reference(77, contact).raw)
    html = _parse(fast.raw).get_body(("html",)).get_content()
    assert _click_links(html) == [deal, deal, help_link]
    assert "shop.example.com/deal" not in html and "\ue002" not in html
    assert _click_links(renderer.render_parts(77, contact).html) == [deal, deal, help_link]


def test_contact_data_shaped_like_a_link_marker_stays_as_written(
    make_renderer, campaign, contact
) -> None:
    """Only the campaign's own markers (a random nonce each) become links."""
    note = "\ue002" + "0" * 16 + "100\ue003"
    renderer = make_renderer({**campaign, "html": MACRO_HTML})
    contact = {**contact, "attributes": {**contact["attributes"], "note": note}}
    html = _parse(renderer.render(78, contact).raw).get_body(("html",)).get_content()
    assert note in html
    assert note in renderer.render_parts(78, contact).html
