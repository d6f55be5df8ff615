"""Benchmark: per-message cost of the campaign renderer's fast path.

Renders a ~20 KB personalised HTML campaign (tracking on: ~20 rewritten
links, an open pixel, CSS inlined at compile time) for many recipients and
compares, in the same run, the fast path (MIME skeleton built once, bytes
spliced per message) with a reference that renders the same parts and builds
each message with the standard library's ``EmailMessage``. Prints one JSON
line with medians over several runs.

    .venv/bin/python bench/render_campaign.py [--messages 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Unfinished, arguments, median, run
from swiftmail_core.rendering import CampaignRenderer, links_in
from swiftmail_core.settings import Settings


def campaign_html(target_bytes: int = 20_000) -> str:
    """Return a realistic newsletter template of about ``target_bytes``."""
    head = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>"
        "body { font-family: Arial, sans-serif; } .card { padding: 12px; border: 1px solid #ddd; }"
        " h2 { color: #222222; font-size: 18px; } p { color: #444444; line-height: 1.4; }"
        " .btn { background: #0066cc; color: #ffffff; padding: 8px 12px; }"
        "</style></head><body>"
        "<h1>Hello {{ contact.first_name | default('there') }},</h1>"
        "<p>Your {{ attributes.plan }} plan renews on {{ attributes.renewal }}.</p>"
    )
    cards = []
    n = 0
    while len(head) + sum(map(len, cards)) < target_bytes - 400:
        cards.append(
            f'<table class="card" width="100%"><tr><td><h2>Offer {n} for {{{{ contact.first_name }}}}</h2>'
            f"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
            f"incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
            f"exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
            f"dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
            f"Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt.</p>"
            f'<a class="btn" href="https://shop.example.com/offers/{n}?utm_source=mail">See offer {n}</a>'
            f"</td></tr></table>"
        )
        n += 1
    tail = (
        "{% if attributes.vip %}<p>Thank you for being a VIP.</p>{% endif %}"
        '<p><a href="{{ view_in_browser_url }}">View in browser</a> | '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )
    return head + "".join(cards) + tail


def build_renderer(css_per_message: bool = False) -> CampaignRenderer:
    """Return a renderer for the benchmark campaign.

    ``css_per_message``: put a Jinja tag inside an HTML tag, which makes CSS
    inlining fall back from once-per-campaign to once-per-message.
    """
    html = campaign_html()
    if css_per_message:
        html = html.replace("<h1>", "<h1 {% if attributes.vip %}class=\"vip\"{% endif %}>", 1)
    campaign = {
        "id": uuid.uuid4(),
        "name": "Benchmark",
        "subject": "{{ contact.first_name }}, your weekly offers",
        "preheader": "Hand-picked for {{ contact.name }}",
        "html": html,
        "text": "",
        "from_name": "Shop Example",
        "from_email": "news@shop.example.com",
        "reply_to": "support@shop.example.com",
        "headers": {"X-Campaign": "bench"},
        "tracking_enabled": True,
        "transport": "relay",
    }
    settings = Settings(secret_key="b" * 48, public_url="https://mail.example.com")
    link_ids = {url: 1000 + n for n, url in enumerate(links_in(html))}
    return CampaignRenderer(
        campaign,
        {"id": uuid.uuid4(), "name": "Shop", "slug": "shop"},
        {"domain": "shop.example.com", "return_path_domain": "b.shop.example.com"},
        settings,
        None,
        link_ids,
    )


def contacts(count: int) -> list[dict]:
    """Return ``count`` distinct contacts with attributes."""
    return [
        {
            "id": uuid.uuid4(),
            "email": f"user{n}@example.org",
            "name": f"User {n}",
            "attributes": {"first_name": f"User{n}", "plan": "gold", "renewal": "2027-01-01",
                           "vip": n % 3 == 0},
        }
        for n in range(count)
    ]


def per_message_us(render, people: list[dict]) -> float:
    """Return CPU microseconds per message for one pass over ``people``.

    CPU time of this process (not wall time), so that other work on the
    machine disturbs the figures less.
    """
    started = time.process_time()
    for ledger_id, person in enumerate(people, start=1):
        render(ledger_id, person, None)
    return (time.process_time() - started) / len(people) * 1e6


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Run the benchmark; return the figures."""
    started = time.perf_counter()
    renderer = build_renderer()
    compile_ms = (time.perf_counter() - started) * 1000
    people = contacts(args.messages)
    sample = renderer.render(1, people[0])
    slow_css = build_renderer(css_per_message=True)
    if not slow_css.inline_per_message or renderer.inline_per_message:
        raise Unfinished("the CSS was not inlined where each renderer should inline it")
    fast, reference, parts_only, ratios, css_each = [], [], [], [], []
    for _ in range(args.runs):  # interleaved, so drift hits all alike
        css_each.append(per_message_us(slow_css.render, people))
        fast.append(per_message_us(renderer.render, people))
        reference.append(per_message_us(renderer.render_reference, people))
        parts_only.append(per_message_us(renderer.render_parts, people))
        ratios.append(reference[-1] / fast[-1])
    fast_us = median(fast)
    return {
        "messages_per_run": args.messages,
        "runs": args.runs,
        "template_html_bytes": len(campaign_html()),
        "message_bytes": len(sample.raw),
        "tracked_links": len(renderer.link_ids_used),
        "css_inlined_at_compile": not renderer.inline_per_message,
        "compile_ms": round(compile_ms, 2),
        "fast_us_per_message": fast_us,
        "reference_emailmessage_us_per_message": median(reference),
        "render_parts_no_mime_us_per_message": median(parts_only),
        "fast_with_css_inlined_per_message_us": median(css_each),
        "speedup_vs_reference": median(ratios, 2),
        "fast_messages_per_hour_one_core": int(3600e6 / fast_us),
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"messages": 50, "runs": 1})
    options.add_argument("--messages", type=int, default=1000)
    options.add_argument("--runs", type=int, default=7)
    return options


if __name__ == "__main__":
    run("render_campaign", measure, parser())
