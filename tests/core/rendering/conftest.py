"""Fixtures for rendering tests: plain-dict campaign, tenant, contact."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from swiftmail_core.rendering import CampaignRenderer, links_in
from swiftmail_core.settings import Settings

SECRET = "r" * 48

HTML = """<!doctype html>
<html><head><style>p { color: #333333; } .big { font-size: 20px; }</style></head>
<body>
<p class="big">Hello {{ contact.first_name | default("friend") }}!</p>
<p>Your plan: {{ attributes.plan }} at {{ tenant.name }} ({{ campaign.name }})</p>
<table>{% for item in contact.products %}<tr><td>
<a href="https://shop.example.com/item?id=1&amp;ref=mail">Item {{ item }}</a></td></tr>{% endfor %}</table>
<a href="https://shop.example.com/">Shop</a>
<a href="https://example.com/private" class="button notrack">Not tracked (class)</a>
<a data-no-track href="https://example.com/private2">Not tracked (attribute)</a>
<a href="mailto:help@shop.example.com">Mail us</a>
<a href="{{ view_in_browser_url }}">View in browser</a>
</body></html>
"""


@pytest.fixture
def render_settings() -> Settings:
    """Settings with a secret key and a public URL."""
    return Settings(secret_key=SECRET, public_url="https://mail.swiftmail.test")


@pytest.fixture
def tenant() -> dict[str, Any]:
    """A tenant row as a dict."""
    return {"id": uuid.uuid4(), "name": "Shop & Co", "slug": "shop"}


@pytest.fixture
def campaign() -> dict[str, Any]:
    """A campaign row as a dict, tracking on."""
    return {
        "id": uuid.uuid4(),
        "name": "Autumn sale",
        "subject": "Hi {{ contact.first_name }}, autumn deals",
        "preheader": "Deals for {{ contact.name }}",
        "html": HTML,
        "text": "",
        "from_name": "Shop & Co",
        "from_email": "news@shop.example.com",
        "reply_to": "Support <support@shop.example.com>",
        "headers": {"X-Campaign-Tag": "autumn"},
        "tracking_enabled": True,
        "transport": "relay",
    }


@pytest.fixture
def contact() -> dict[str, Any]:
    """A contact row as a dict, with attributes."""
    return {
        "id": uuid.uuid4(),
        "email": "alice@example.org",
        "name": "Alice Example",
        "attributes": {"first_name": "Alice", "plan": "gold", "products": ["A", "B"]},
    }


@pytest.fixture
def sending_domain() -> dict[str, Any]:
    """A sending domain with a bounce and a tracking domain."""
    return {
        "domain": "shop.example.com",
        "return_path_domain": "bounces.shop.example.com",
        "tracking_domain": "",
    }


@pytest.fixture
def make_renderer(render_settings, tenant, sending_domain):
    """Build a CampaignRenderer with links registered as ids 100, 101..."""

    def make(campaign: dict[str, Any], plugin_manager: Any = None, **kwargs: Any):
        link_ids = {url: 100 + n for n, url in enumerate(links_in(campaign["html"]))}
        renderer = CampaignRenderer(
            campaign, tenant, sending_domain, render_settings, plugin_manager, link_ids, **kwargs
        )
        renderer.test_link_ids = link_ids
        return renderer

    return make
