"""Link markers: cut at compile time, filled per message, anything else left as written."""

from __future__ import annotations

from swiftmail_core.rendering.link_slots import CLOSE, LinkSlots


def test_a_literal_is_cut_into_text_and_link_pieces() -> None:
    slots = LinkSlots()
    literal = f'<a href="{slots.marker(7)}">A</a>{slots.marker(8)}{slots.marker(7)} end'
    assert slots.split_literal(literal) == [
        ("text", '<a href="'), ("link", "7"), ("text", '">A</a>'), ("link", "8"), ("link", "7"),
        ("text", " end"),
    ]
    assert slots.split_literal("no markers here") is None


def test_fill_replaces_whole_markers_only() -> None:
    slots, other = LinkSlots(), LinkSlots()
    urls = {"7": "https://t.example/t/c/seven"}
    text = (f"a {slots.marker(7)} b {slots.marker(9)} c {other.marker(7)} "
            f"d {slots.prefix}7 e {slots.prefix}x{CLOSE}")
    assert slots.fill(text, urls) == (
        f"a https://t.example/t/c/seven b  c {other.marker(7)} "
        f"d {slots.prefix}7 e {slots.prefix}x{CLOSE}")
    assert slots.fill("plain", urls) == "plain"
