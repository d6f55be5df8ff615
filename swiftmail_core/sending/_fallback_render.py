"""A minimal renderer used only until ``swiftmail_core.rendering`` is installed.

NOTE: no tracking, no CSS inlining, no List-Unsubscribe: it exists so the
outbox and transports can be exercised before the real renderer lands.
"""

from __future__ import annotations

import dataclasses
import email.utils
from email.message import EmailMessage
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(autoescape=True)


@dataclasses.dataclass(frozen=True)
class RenderedMessage:
    """A rendered message for one recipient."""

    raw: bytes
    message_id: str
    envelope_from: str
    recipient: str


class FallbackRenderer:
    """Render subject, html and text with Jinja2; build a plain MIME message."""

    def __init__(self, campaign: dict[str, Any], tenant: dict[str, Any],
                 sending_domain: dict[str, Any] | None, settings: Any, plugin_manager: Any,
                 link_ids: dict[str, int]) -> None:
        self.campaign = campaign
        self.subject = _ENV.from_string(campaign.get("subject") or "")
        self.html = _ENV.from_string(campaign.get("html") or "")
        self.text = _ENV.from_string(campaign.get("text") or "")

    def links_in(self, html: str) -> list[str]:
        """Return no links (the fallback does not track)."""
        return []

    def render(self, ledger_id: int, contact: dict[str, Any], list_id: Any) -> RenderedMessage:
        """Render one message for ``contact``."""
        attributes = dict(contact.get("attributes") or {})
        context = {"contact": {**attributes, **contact}, "data": contact.get("data", {}),
                   "campaign": {"name": self.campaign.get("name", "")}}
        sender = self.campaign.get("from_email", "")
        domain = sender.rsplit("@", 1)[-1] or "swiftmail.invalid"
        message_id = f"<{ledger_id}.{self.campaign.get('tenant_id')}@{domain}>"
        message = EmailMessage()
        message["From"] = email.utils.formataddr((self.campaign.get("from_name", ""), sender))
        message["To"] = contact["email"]
        message["Subject"] = self.subject.render(context)
        message["Message-ID"] = message_id
        message["X-SwiftMail-Ledger"] = str(ledger_id)
        message.set_content(self.text.render(context) or "(html only)")
        html = self.html.render(context)
        if html:
            message.add_alternative(html, subtype="html")
        return RenderedMessage(message.as_bytes(), message_id, sender, contact["email"])
