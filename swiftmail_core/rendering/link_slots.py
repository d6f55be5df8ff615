"""Tracked links as literal markers in a compiled template, filled per message.

A campaign's HTML repeats its few tracked links in many places (a newsletter's
ten links in a hundred ``<a>`` tags). Were each place a template expression,
every message would pay a sandboxed lookup, an HTML escape and two extra
output chunks per place. Instead ``rewrite_links`` writes a marker into the
template's literal text: ``OPEN + nonce + link id + CLOSE``, the nonce random
per compiled campaign, so no contact attribute and no template author can
write one. Per message:

- the fast path (``render_field_encoded``) splits each literal chunk at its
  markers once, at compile time (``split_literal``), and fills the slots with
  the message's links, each encoded once;
- any other text (a macro's or ``{% set %}`` block's output, the compose-hook
  and reference paths) has its markers replaced by ``fill``.

A filter that changes a marker's characters (``upper``, ``urlencode``) breaks
it, as it broke the tracked URL it stood for before. The output size limit
(``RenderLimits.max_output_chars``) counts a marker, not its URL: how many
URLs a message gets is bounded by the template's own size.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

OPEN, CLOSE = "\ue002", "\ue003"  # Protected's placeholders use U+E000 and U+E001


class LinkSlots:
    """The markers of one compiled campaign and the text they stand for."""

    def __init__(self) -> None:
        self.prefix = OPEN + secrets.token_hex(8)

    def marker(self, link_id: int) -> str:
        """Return the literal that stands for link ``link_id`` in the template."""
        return f"{self.prefix}{link_id}{CLOSE}"

    def _cut(self, text: str) -> list[tuple[str | None, str]]:
        """Return (link id as text, or None for the head, the text after it) pairs."""
        head, *rest = text.split(self.prefix)
        cut: list[tuple[str | None, str]] = [(None, head)]
        for piece in rest:
            key, found, tail = piece.partition(CLOSE)
            if found and key.isdigit():
                cut.append((key, tail))
            else:  # not a whole marker (a filter cut it): left as it was
                cut.append((None, self.prefix + piece))
        return cut

    def split_literal(self, literal: str) -> list[tuple[str, str]] | None:
        """Cut ``literal`` at its markers: ("text", str) and ("link", id as text) pieces in order.

        None if it holds no marker.
        """
        if self.prefix not in literal:
            return None
        pieces: list[tuple[str, str]] = []
        for key, text in self._cut(literal):
            if key is not None:
                pieces.append(("link", key))
            if text:
                pieces.append(("text", text))
        return pieces

    def fill(self, text: str, urls: Mapping[str, str]) -> str:
        """Replace every marker in ``text`` with its link's URL (``urls`` by id as text)."""
        if self.prefix not in text:
            return text
        return "".join(text if key is None else urls.get(key, "") + text
                       for key, text in self._cut(text))
