"""Preview a template for the API: the final subject, HTML and text.

The preview goes through the same compile steps as a campaign (footer,
preheader, CSS inlining, derived text) with tracking off; its unsubscribe and
preference links point at ``/u/preview`` and ``/p/preview``, never at a real
token.
"""

from __future__ import annotations

import uuid
from typing import Any

from swiftmail_core.rendering.renderer import CampaignRenderer
from swiftmail_core.rendering.sandbox import RenderLimits
from swiftmail_core.rendering.validation import SAMPLE_CONTACT


class _PreviewSettings:
    secret_key = None

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url


def render_preview(
    template: dict[str, Any],
    sample: dict[str, Any] | None = None,
    *,
    public_url: str = "http://127.0.0.1:8000",
    limits: RenderLimits | None = None,
) -> dict[str, str]:
    """Return ``{"subject", "html", "text"}`` for template fields and sample data.

    ``template`` has ``subject``, ``preheader``, ``html``, ``text``;
    ``sample`` may give ``contact`` (``email``, ``name``, ``attributes``),
    ``campaign`` and ``tenant`` dicts. Errors are ValidationErrors naming the
    field, as in ``validate_template``.
    """
    sample = sample or {}
    tenant = {"id": uuid.UUID(int=0), "name": "", "slug": ""}
    tenant.update(sample.get("tenant") or {})
    campaign = {
        "id": None,
        "name": "Preview",
        "from_email": "preview@example.invalid",
        "tracking_enabled": False,
        **(sample.get("campaign") or {}),
        **{key: template.get(key, "") for key in ("subject", "preheader", "html", "text")},
    }
    renderer = CampaignRenderer(
        campaign,
        tenant,
        None,
        _PreviewSettings(public_url),
        None,
        {},
        limits=limits,
        preview=True,
    )
    contact = dict(sample.get("contact") or SAMPLE_CONTACT)
    contact.setdefault("email", SAMPLE_CONTACT["email"])
    parts = renderer.render_parts(0, contact, None)
    return {"subject": parts.subject, "html": parts.html, "text": parts.text}
