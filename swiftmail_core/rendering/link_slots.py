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

import re
import secrets
from collections.abc import Mapping

OPEN, CLOSE = "\ue002", "\ue003"  # Protected's placeholders use U+E000 and U+E001


class LinkSlots:
    """The markers of one compiled campaign and the text they stand for."""

    def __init__(self) -> None:
        self.prefix = OPEN + secrets.token_hex(8)
        self._pattern = re.compile(re.escape(self.prefix) + r"(\d+)" + CLOSE)

    def marker(self, link_id: int) -> str:
        """Return the literal that stands for link ``link_id`` in the template."""
        return f"{self.prefix}{link_id}{CLOSE}"

    def split_literal(self, literal: str) -> list[str | int] | None:
        """Cut ``literal`` at its markers: text and link ids in order; None if it has none."""
        if self.prefix not in literal:
            return None
        pieces: list[str | int] = []
        for index, piece in enumerate(self._pattern.split(literal)):
            if index % 2:
                pieces.append(int(piece))
            elif piece:
                pieces.append(piece)
        return pieces

    def fill(self, text: str, urls: Mapping[int, str]) -> str:
        """Replace every marker in ``text`` with its link's URL (empty if not in ``urls``)."""
        if self.prefix not in text:
            return text
        return self._pattern.sub(lambda match: urls.get(int(match.group(1)), ""), text)
