"""Render campaign email: sandboxed templates, tracking, headers, fast MIME.

The stable interface (other packages call only these):

- ``validate_template(subject, html, text="", preheader="") -> None``: for the
  API's template/campaign save and test send; raises ``ValidationError``
  naming the field and line (``html: line 3: unexpected '}'``).
- ``check_sender(campaign) -> None``: validates ``from_email``, ``from_name``,
  ``reply_to``, ``subject`` and custom ``headers`` (CR/LF/NUL refused, errors
  name the field, e.g. ``headers.X-Tag``).
- ``render_preview(template, sample=None) -> {"subject", "html", "text"}``.
- ``links_in(html) -> list[str]``: the tracked link URLs of a template, to
  insert into the ``links`` table before building the renderer.
- ``CampaignRenderer(campaign, tenant, sending_domain, settings,
  plugin_manager, link_ids)`` and its ``.render(ledger_id, contact,
  list_id=None) -> RenderedMessage(raw, message_id, envelope_from,
  recipient, crlf)``. Build one per campaign (and per worker process); compile
  cost is paid once, ``render`` is the per-recipient fast path. See
  ``renderer.py`` for the dict shapes, the context and the headers.
- ``verp_return_path(bounce_domain, tenant_id, ledger_id, secret_key)`` and
  ``parse_verp(address, secret_key) -> VerpAddress(tenant_id, ledger_id)``.

Tokens and public URL paths live in ``swiftmail_core.tokens``.
"""

from swiftmail_core.rendering.html_tools import links_in
from swiftmail_core.rendering.preview import render_preview
from swiftmail_core.rendering.renderer import (
    CampaignRenderer,
    RenderedMessage,
    RenderedParts,
    check_sender,
)
from swiftmail_core.rendering.sandbox import RenderLimits
from swiftmail_core.rendering.validation import validate_template
from swiftmail_core.rendering.verp import VerpAddress, parse_verp, verp_return_path

__all__ = [
    "CampaignRenderer",
    "RenderLimits",
    "RenderedMessage",
    "RenderedParts",
    "VerpAddress",
    "check_sender",
    "links_in",
    "parse_verp",
    "render_preview",
    "validate_template",
    "verp_return_path",
]
