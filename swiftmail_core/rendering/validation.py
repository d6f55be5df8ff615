"""Save-time and test-time checks of tenant templates (the API's 422s).

``validate_template(subject, html, text, preheader)`` compiles every field in
the sandbox and renders it once with sample data, so a syntax error, a
sandbox violation or a limit is reported when the template is saved, as a
``ValidationError`` naming the field and line (``html: line 3: unexpected
'}'``), never as a crash mid-campaign.
"""

from __future__ import annotations

import uuid
from typing import Any

from swiftmail_core.rendering import headers as hdr
from swiftmail_core.rendering.sandbox import RenderLimits

SAMPLE_CONTACT: dict[str, Any] = {
    "id": str(uuid.UUID(int=1)),
    "email": "sample@example.com",
    "name": "Sample Person",
    "attributes": {"first_name": "Sample", "last_name": "Person"},
}


def sample_context(sample: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the template context used for validation and previews."""
    sample = sample or {}
    contact = dict(sample.get("contact") or SAMPLE_CONTACT)
    attributes = dict(contact.get("attributes") or {})
    person = dict(attributes)
    person.update(
        id=str(contact.get("id") or ""),
        email=str(contact.get("email") or ""),
        name=str(contact.get("name") or ""),
        attributes=attributes,
    )
    base = "https://example.invalid"
    return {
        "contact": person,
        "attributes": attributes,
        "campaign": dict(sample.get("campaign") or {"id": "", "name": "Sample campaign"}),
        "tenant": dict(sample.get("tenant") or {"id": "", "name": "Sample", "slug": "sample"}),
        "unsubscribe_url": f"{base}/u/preview",
        "preferences_url": f"{base}/p/preview",
        "view_in_browser_url": f"{base}/v/preview",
    }


def validate_template(
    subject: str,
    html: str,
    text: str = "",
    preheader: str = "",
    *,
    sample: dict[str, Any] | None = None,
    limits: RenderLimits | None = None,
) -> None:
    """Raise ValidationError naming the first bad field; return None when valid.

    An empty body is allowed here (a draft); sending one is refused by the
    renderer ("html: give an HTML or a text body").
    """
    from swiftmail_core.rendering.renderer import HTML_SANDBOX, TEXT_SANDBOX

    limits = limits or RenderLimits()
    hdr.refuse_line_breaks("subject", subject or "")
    fields = [
        ("subject", TEXT_SANDBOX, subject or ""),
        ("preheader", TEXT_SANDBOX, preheader or ""),
        ("html", HTML_SANDBOX, html or ""),
        ("text", TEXT_SANDBOX, text or ""),
    ]
    compiled = [(field, sandbox, sandbox.compile_field(field, source)) for field, sandbox, source in fields]
    context = sample_context(sample)
    for field, sandbox, template in compiled:
        rendered = sandbox.render_field(field, template, context, limits)
        if field == "subject":
            hdr.refuse_line_breaks("subject", rendered)
