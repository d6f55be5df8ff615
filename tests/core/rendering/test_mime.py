"""The spliced message parses and equals the EmailMessage-built reference."""

from __future__ import annotations

import email
import uuid
from email import policy
from typing import Any

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager


def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def assert_crlf_claim_holds(rendered: Any) -> None:
    """A message marked ``crlf`` holds no bare CR or LF (the relay skips its check)."""
    from swiftmail_relay.message_checks import canonical_line_endings

    assert rendered.crlf
    assert canonical_line_endings(rendered.raw) == rendered.raw


def assert_same_message(fast_raw: bytes, reference_raw: bytes) -> None:
    """Compare two messages semantically: headers, structure and part contents."""
    fast, reference = _parse(fast_raw), _parse(reference_raw)
    assert fast.defects == [] and reference.defects == []
    assert [key.lower() for key in fast.keys()] == [key.lower() for key in reference.keys()] or (
        sorted(key.lower() for key in fast.keys()) == sorted(key.lower() for key in reference.keys())
    )
    for key in reference.keys():
        if key.lower() == "content-type":
            assert fast.get_content_type() == reference.get_content_type()
            continue
        assert str(fast[key]) == str(reference[key]), key
    fast_parts = [(p.get_content_type(), p.get_content_charset()) for p in fast.walk()]
    reference_parts = [(p.get_content_type(), p.get_content_charset()) for p in reference.walk()]
    assert fast_parts == reference_parts
    for kind in ("plain", "html"):
        if reference.get_body((kind,)) is None:
            assert fast.get_body((kind,)) is None
            continue
        assert _lines(fast.get_body((kind,)).get_content()) == _lines(
            reference.get_body((kind,)).get_content()
        )


def test_fast_path_equals_reference(make_renderer, campaign, contact) -> None:
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    list_id = uuid.uuid4()
    fast = renderer.render(31, contact, list_id)
    reference = renderer.render_reference(31, contact, list_id)
    assert (fast.message_id, fast.envelope_from, fast.recipient) == (
        reference.message_id,
        reference.envelope_from,
        reference.recipient,
    )
    assert_same_message(fast.raw, reference.raw)


def test_fast_path_equals_reference_with_unicode_and_long_lines(
    make_renderer, campaign, contact
) -> None:
    campaign["from_name"] = "Zoë's Café"
    campaign["subject"] = "Ça va {{ contact.first_name }}? ✓"
    campaign["html"] = (
        "<html><body><p>" + "Grüße aus Köln, " * 80 + "</p>"
        "<p>trailing spaces   \n.dot line\nFrom the start\n=_sm_ boundary-ish --=_sm_x</p>"
        "<p>{{ contact.first_name }} 😀</p></body></html>"
    )
    contact["attributes"]["first_name"] = "Zoé"
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    fast = renderer.render(32, contact)
    assert_same_message(fast.raw, renderer.render_reference(32, contact).raw)
    assert "Grüße aus Köln" in _parse(fast.raw).get_body(("html",)).get_content()


def test_wire_format_is_crlf_ascii_and_short_lines(make_renderer, campaign, contact) -> None:
    campaign["html"] = "<p>" + "é" * 5000 + "</p>\n<p>{{ unsubscribe_url }}</p>"
    raw = make_renderer(campaign).render(1, contact).raw
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert raw.endswith(b"--\r\n")


def test_boundary_never_appears_in_content(make_renderer, campaign, contact) -> None:
    renderer = make_renderer(campaign)
    boundary = renderer._skeleton.boundary
    contact["attributes"]["first_name"] = f"--{boundary}"
    raw = renderer.render(1, contact).raw
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert body.count(f"--{boundary}".encode()) == 3  # two part starts and the end
    assert "--" + boundary in _parse(raw).get_body(("plain",)).get_content()


class _AddHeader:
    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    @hookimpl
    def swiftmail_compose_message(self, message, context) -> None:
        self.contexts.append(context)
        message["X-Composed-By"] = "test-plugin"


def test_compose_hook_gets_an_email_message(
    make_renderer, campaign, contact, render_settings, tenant
) -> None:
    plugin = _AddHeader()
    manager = PluginManager(render_settings)
    manager.register(plugin, "add-header")
    renderer = make_renderer(campaign, plugin_manager=manager)
    assert renderer.uses_compose_hook
    rendered = renderer.render(55, contact)
    assert rendered.crlf is False  # a plugin's message: the relay checks its line endings
    parsed = _parse(rendered.raw)
    assert str(parsed["X-Composed-By"]) == "test-plugin"
    assert str(parsed["Message-ID"]) == rendered.message_id
    assert plugin.contexts == [
        {
            "tenant_id": tenant["id"],
            "campaign_id": campaign["id"],
            "ledger_id": 55,
            "recipient": "alice@example.org",
            "transport": "relay",
        }
    ]


def test_no_hook_implementations_means_fast_path(make_renderer, campaign, render_settings) -> None:
    assert not make_renderer(campaign, plugin_manager=PluginManager(render_settings)).uses_compose_hook
    assert not make_renderer(campaign).uses_compose_hook


def test_per_message_inlining_path_equals_reference(make_renderer, campaign, contact) -> None:
    campaign["html"] = (
        "<html><head><style>p { color: red; }</style></head><body>"
        "<p {% if contact.first_name %}class=\"named\"{% endif %}>Hi {{ contact.first_name }}</p>"
        '<a href="https://shop.example.com/">Shop</a></body></html>'
    )
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    assert renderer.inline_per_message
    fast = renderer.render(8, contact)
    assert_crlf_claim_holds(fast)
    assert_same_message(fast.raw, renderer.render_reference(8, contact).raw)
    assert 'style="color: red;"' in _parse(fast.raw).get_body(("html",)).get_content()


def test_encoded_path_with_loops_macros_and_no_final_newline(
    make_renderer, campaign, contact
) -> None:
    campaign["html"] = (
        "{% macro row(x) %}<tr><td>Row {{ x }} with a long literal tail here</td></tr>{% endmacro %}"
        "<table>{% for x in contact.products %}{{ row(x) }}{% endfor %}</table>"
        "<p>{{ unsubscribe_url }}</p>"
    )
    campaign["text"] = "Line one\r\nLine two {{ contact.first_name }}\rLine three"
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    fast = renderer.render(9, contact)
    assert_crlf_claim_holds(fast)
    assert_same_message(fast.raw, renderer.render_reference(9, contact).raw)
    text = _parse(fast.raw).get_body(("plain",)).get_content()
    assert _lines(text).startswith("Line one\nLine two Alice\nLine three")


def test_randomised_personal_data_round_trips_exactly(make_renderer, campaign, contact) -> None:
    """Fuzz the literal/personal splicing: decoded parts equal the reference."""
    import random

    rng = random.Random(20261127)
    alphabet = "ab =.\t\n\r\0é€😀<>&\"'{}%=3D=\r\n"
    campaign["html"] = (
        "<html><body><p>Start {{ contact.first_name }}|{{ attributes.plan }}|</p>\n"
        "<pre>{{ attributes.note }}</pre>" + "<p>" + "static text " * 20 + "</p>"
        "{% for x in contact.products %}<i>{{ x }}</i>{% endfor %}{{ attributes.tail }}"
        "<p>{{ unsubscribe_url }}</p></body></html>"
    )
    campaign["text"] = "T {{ attributes.note }}{{ attributes.tail }}\n{{ unsubscribe_url }}"
    campaign["tracking_enabled"] = False
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)

    def word(length: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(length))

    for ledger_id in range(1, 60):
        contact["attributes"] = {
            "first_name": word(rng.randint(0, 12)).replace("\r", "").replace("\n", ""),
            "plan": word(rng.randint(0, 90)),
            "note": word(rng.randint(0, 300)),
            "products": [word(rng.randint(0, 80)) for _ in range(rng.randint(0, 4))],
            "tail": word(rng.randint(0, 5)),
        }
        contact["attributes"]["first_name"] = contact["attributes"]["first_name"].replace("\0", "")
        fast = renderer.render(ledger_id, contact)
        assert_crlf_claim_holds(fast)
        assert_same_message(fast.raw, renderer.render_reference(ledger_id, contact).raw)
        body = fast.raw.split(b"\r\n\r\n", 1)[1]
        long_lines = [line for line in body.split(b"\r\n") if len(line) > 76]
        assert not long_lines, long_lines


def test_quoted_printable_pieces_join_within_76_columns_and_decode_exactly() -> None:
    """Fuzz the encoder the fast path relies on (fixed seed, so repeatable)."""
    import quopri
    import random

    from swiftmail_core.rendering.mime import (
        SOFT_BREAK,
        joinable_quoted_printable,
        quoted_printable_many,
    )

    rng = random.Random(3)
    alphabet = "ab =.\t\né€\r\0"
    for round_number in range(4000):
        texts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 160)))
            for _ in range(rng.randint(1, 6))
        ]
        if round_number % 2:
            texts = [text.replace("\0", "") for text in texts]  # the one-call path
        if round_number % 5 == 1:
            texts = texts + texts[::-1]  # repeated texts are encoded once
        pieces = quoted_printable_many(texts)
        if round_number % 3 == 0:
            pieces = [joinable_quoted_printable(text) for text in texts]
        joined = SOFT_BREAK.join(pieces)
        assert all(len(line) <= 76 for line in joined.split(b"\r\n")), joined
        expected = "".join(text.replace("\r\n", "\n").replace("\r", "\n") for text in texts)
        assert quopri.decodestring(joined).decode().replace("\r\n", "\n") == expected


def test_text_only_campaign_is_a_single_text_part(make_renderer, campaign, contact) -> None:
    campaign["html"] = ""
    campaign["text"] = "Hello {{ contact.first_name }}, plain only."
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    fast = renderer.render(3, contact)
    assert_crlf_claim_holds(fast)
    parsed = _parse(fast.raw)
    assert parsed.get_content_type() == "text/plain" and not parsed.is_multipart()
    assert parsed.get_content().startswith("Hello Alice, plain only.")
    assert "Unsubscribe: https://mail.swiftmail.test/u/" in parsed.get_content()
    assert_same_message(fast.raw, renderer.render_reference(3, contact).raw)


def test_no_body_at_all_is_refused(make_renderer, campaign) -> None:
    import pytest

    from swiftmail_core.errors import ValidationError

    campaign["html"], campaign["text"] = "  ", ""
    with pytest.raises(ValidationError) as caught:
        make_renderer(campaign)
    assert caught.value.errors[0]["field"] == "html"


def test_crlf_claim_holds_with_folded_and_encoded_headers(make_renderer, campaign, contact) -> None:
    # The renderer's own bytes are marked CRLF throughout, so the relay transport
    # signs them without re-checking; headers folded or RFC 2047-encoded included.
    campaign["subject"] = "Grüße {{ contact.first_name }} " + "lange Betreffzeile " * 12
    campaign["from_name"] = "Büro für Öffentlichkeit"
    campaign["reply_to"] = "Antwort Ärger <reply@shop.example.com>"
    campaign["headers"] = {"X-Long": "word " * 60, "X-Unicode": "ünïcödé " * 20}
    campaign["text"] = "Text\r\nwith\rbreaks\n{{ attributes.note }}\u2028end"
    contact["attributes"]["note"] = "a\rb\nc\r\nd\x0b\x0c\x85 " * 30
    renderer = make_renderer(campaign, clock=lambda: 1_800_000_000)
    fast = renderer.render(12, contact)
    assert_crlf_claim_holds(fast)
    assert_same_message(fast.raw, renderer.render_reference(12, contact).raw)
