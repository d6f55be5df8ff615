"""Render one campaign for many recipients: compile once, splice per message.

``CampaignRenderer(campaign, tenant, sending_domain, settings, plugin_manager,
link_ids)`` does all per-campaign work in its constructor: validates the
sender fields and custom headers, compiles subject, preheader, HTML and text
templates in the sandbox, rewrites tracked links, inserts the open pixel,
preheader and (when the template has no ``unsubscribe_url``) an unsubscribe
footer, inlines CSS, derives the text part when none is given, and encodes
every static header and the MIME skeleton to bytes.

``render(ledger_id, contact, list_id)`` then only renders the personalised
parts, makes the signed tokens and splices bytes. When a plugin implements
``swiftmail_compose_message``, each message is instead built as an
``EmailMessage``, handed to the hook and serialised (slower, but the hook
sees a real message); otherwise the fast path runs.

Inputs are plain dicts (database rows as dicts):

- campaign: ``id``, ``name``, ``subject``, ``preheader``, ``html``, ``text``,
  ``from_name``, ``from_email``, ``reply_to``, ``headers`` (dict),
  ``tracking_enabled``, ``transport``; optional ``kind`` (Feedback-ID) and
  ``track_links`` (default true; false keeps only the open pixel).
- tenant: ``id``, ``name``, ``slug``.
- sending_domain: ``domain``, ``return_path_domain``, ``tracking_domain``, or
  None (then the From address's domain is used and links use public_url).
- contact: ``id`` (None for a test send), ``email``, ``name``, ``attributes``.

Template context: ``contact`` (attributes, then ``id``, ``email``, ``name``
and ``attributes`` on top), ``attributes``, ``campaign`` (id, name),
``tenant`` (id, name, slug), ``unsubscribe_url``, ``preferences_url``,
``view_in_browser_url``.

Headers written: From, Reply-To, To, Subject, Date, Message-ID
(``<{ledger_id}.{tenant id hex[:12]}@{sending domain}>``), List-Unsubscribe
(``<https://.../u/{token}>, <mailto:unsubscribe@{bounce domain}?subject=unsubscribe-{token}>``),
List-Unsubscribe-Post (``List-Unsubscribe=One-Click``), Feedback-ID
(``{campaign}:{tenant}:{kind}:swiftmail``), the campaign's custom headers,
MIME-Version and Content-Type. The envelope sender is a signed VERP address
(``verp.py``). DKIM signing happens later, in the relay or transport.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from email.headerregistry import Address
from email.utils import formatdate
from typing import Any

from swiftmail_core import tokens
from swiftmail_core.errors import ValidationError
from swiftmail_core.rendering import headers as hdr
from swiftmail_core.rendering import html_tools
from swiftmail_core.rendering.link_slots import LinkSlots
from swiftmail_core.rendering.mime import (
    SOFT_BREAK,
    Skeleton,
    build_reference,
    joinable_quoted_printable,
    new_boundary,
    quoted_printable,
    quoted_printable_many,
)
from swiftmail_core.rendering.sandbox import RenderLimits, TemplateSandbox
from swiftmail_core.rendering.verp import verp_local_part

HTML_SANDBOX = TemplateSandbox(autoescape=True)
TEXT_SANDBOX = TemplateSandbox(autoescape=False)
NIL_UUID = uuid.UUID(int=0)

FOOTER_HTML = (
    '<div style="margin-top:24px;font-size:12px;color:#666666;text-align:center">'
    '<a href="{{ unsubscribe_url }}" style="color:#666666">Unsubscribe</a> &middot; '
    '<a href="{{ preferences_url }}" style="color:#666666">Manage preferences</a></div>'
)
FOOTER_TEXT = "\n\n--\nUnsubscribe: {{ unsubscribe_url }}\nManage preferences: {{ preferences_url }}\n"
PREHEADER_HTML = (
    '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true">'
    "{{ _sm_preheader }}</div>"
)
PIXEL_HTML = (
    '<img src="{{ _sm_open_url }}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0" />'
)


@dataclasses.dataclass(frozen=True)
class RenderedMessage:
    """One message ready for a transport: bytes with CRLF line endings.

    ``message_id`` is the Message-ID header value with its angle brackets.
    ``crlf`` is True when the renderer itself built ``raw`` (the fast path),
    whose every line break is CRLF and which holds no bare CR or LF: its
    header lines are checked for line breaks and its parts are
    quoted-printable. A compose hook's message leaves it False.
    """

    raw: bytes
    message_id: str
    envelope_from: str
    recipient: str
    crlf: bool = False


@dataclasses.dataclass(frozen=True)
class _Prepared:
    context: dict[str, Any]
    subject: str
    recipient: str
    message_id: str
    envelope_from: str
    list_unsubscribe: str
    date: str
    links: dict[str, str]  # tracked link id (as text) -> this message's click URL


@dataclasses.dataclass(frozen=True)
class RenderedParts:
    """The personalised pieces of one message, before MIME encoding."""

    subject: str
    html: str
    text: str
    headers: list[tuple[str, Any]]  # decoded values, in header order
    message_id: str
    envelope_from: str
    recipient: str


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _is_constant(source: str) -> bool:
    return html_tools._JINJA.search(source) is None


class CampaignRenderer:
    """Compile a campaign once; render each recipient's message fast."""

    def __init__(
        self,
        campaign: dict[str, Any],
        tenant: dict[str, Any],
        sending_domain: dict[str, Any] | None,
        settings: Any,
        plugin_manager: Any,
        link_ids: dict[str, int],
        *,
        limits: RenderLimits | None = None,
        clock: Callable[[], float] = time.time,
        preview: bool = False,
    ) -> None:
        self.limits = limits or RenderLimits()
        self.clock = clock
        self.preview = preview
        self.plugin_manager = plugin_manager
        self.secret_key: str = settings.secret_key if not preview else "p" * 32
        self.campaign = campaign
        self.tenant_id = _uuid(tenant["id"])
        self._tenant_bytes = self.tenant_id.bytes
        self.campaign_id = _uuid(campaign["id"]) if campaign.get("id") else None
        self.tracking = bool(campaign.get("tracking_enabled", True)) and not preview
        # Links are tracked only where they are registered (a campaign's ``links``);
        # ``track_links`` False keeps the open pixel alone (journey emails).
        self.track_links = self.tracking and bool(campaign.get("track_links", True))
        self._signer = tokens.signer(self.secret_key)
        self._mint_click = self._signer.click_minter(self._tenant_bytes)

        # Sender, domains and static headers (validated: errors name the field).
        from_email = hdr.normalise_address("from_email", _text(campaign.get("from_email")))
        from_name = _text(campaign.get("from_name"))
        self._from = hdr.format_address("from_name", from_name, from_email)
        self._from_ref = Address(display_name=from_name.strip(), addr_spec=from_email)
        domain = (sending_domain or {}).get("domain") or from_email.rpartition("@")[2]
        domain = hdr.ascii_domain("sending_domain.domain", domain)
        self.sending_domain = domain
        bounce_domain = (sending_domain or {}).get("return_path_domain") or domain
        self.bounce_domain = hdr.ascii_domain("sending_domain.return_path_domain", bounce_domain)
        public_url = getattr(settings, "public_url", "http://127.0.0.1:8000")
        self.base_url = tokens.tracking_base_url(public_url, sending_domain)
        reply_to = _text(campaign.get("reply_to")).strip()
        self._reply_to = self._reply_to_ref = None
        if reply_to:
            name, address = hdr.parse_reply_to("reply_to", reply_to)
            self._reply_to = hdr.format_address("reply_to", name, address)
            self._reply_to_ref = Address(display_name=name, addr_spec=address)
        self._custom = hdr.check_custom_headers(campaign.get("headers"))
        kind = _text(campaign.get("kind")) or "campaign"
        campaign_part = self.campaign_id.hex[:16] if self.campaign_id else "none"
        self.feedback_id = f"{campaign_part}:{self.tenant_id.hex[:16]}:{kind}:swiftmail"
        self._message_id_suffix = f".{self.tenant_id.hex[:12]}@{domain}>"

        self._compile_templates(link_ids)
        self._campaign_context = {
            "id": str(self.campaign_id) if self.campaign_id else "",
            "name": _text(campaign.get("name")),
        }
        self._tenant_context = {
            "id": str(self.tenant_id),
            "name": _text(tenant.get("name")),
            "slug": _text(tenant.get("slug")),
        }
        self._skeleton = Skeleton(
            self._static_headers(), new_boundary(), text_only=self.text_only
        )
        self._date_second = -1
        self._date = ""
        hooks = getattr(getattr(plugin_manager, "pm", None), "hook", None)
        compose = getattr(hooks, "swiftmail_compose_message", None)
        self.uses_compose_hook = bool(compose is not None and compose.get_hookimpls())

    # Compile-time ------------------------------------------------------------
    def _compile_templates(self, link_ids: dict[str, int]) -> None:
        campaign = self.campaign
        subject_source = _text(campaign.get("subject"))
        preheader_source = _text(campaign.get("preheader"))
        html_source = _normalise_newlines(_text(campaign.get("html")))
        text_source = _normalise_newlines(_text(campaign.get("text")))
        hdr.refuse_line_breaks("subject", subject_source)
        self._subject = TEXT_SANDBOX.compile_field("subject", subject_source)
        self._preheader = TEXT_SANDBOX.compile_field("preheader", preheader_source)
        HTML_SANDBOX.check_syntax("html", html_source)
        if text_source:
            TEXT_SANDBOX.check_syntax("text", text_source)
        self._constant_subject = (
            TEXT_SANDBOX.render_field("subject", self._subject, {}, self.limits)
            if _is_constant(subject_source)
            else None
        )
        self._has_preheader = bool(preheader_source.strip())
        self.text_only = not html_source.strip()
        if self.text_only and not text_source.strip():
            raise ValidationError.for_field("html", "give an HTML or a text body")

        protected = html_tools.Protected(html_source)
        self.link_ids_used: list[int] = []
        self._links = LinkSlots()
        if self.track_links:
            html_tools.rewrite_links(protected, link_ids, self._links.marker)
            self.link_ids_used = sorted(
                {link_ids[url] for url in html_tools.links_in(html_source)}
            )
        self._link_keys = [(str(link_id), link_id) for link_id in self.link_ids_used]
        if "unsubscribe_url" not in html_source:
            html_tools.insert_before_body_close(protected, protected.protect_snippet(FOOTER_HTML))
        derived_text = None if text_source else html_tools.html_to_text(protected)
        if self._has_preheader:
            html_tools.insert_after_body_open(protected, protected.protect_snippet(PREHEADER_HTML))
        if self.tracking:
            html_tools.insert_before_body_close(protected, protected.protect_snippet(PIXEL_HTML))
        self.inline_per_message = not html_tools.inline_css_once(protected)
        html_final = protected.restore(protected.html)
        self._html = HTML_SANDBOX.compile_field("html", html_final)
        if derived_text is not None:
            text_source = protected.restore(derived_text)
        if "unsubscribe_url" not in text_source:
            text_source = text_source.rstrip("\n") + FOOTER_TEXT
        self._text_template = TEXT_SANDBOX.compile_field(
            "text" if derived_text is None else "html (the text part derived from it)",
            text_source,
        )
        # Literal chunks are quoted-printable encoded once, here (see render()).
        self._html_literals = _encoded_literals(HTML_SANDBOX, self._html, self._links)
        self._text_literals = _encoded_literals(TEXT_SANDBOX, self._text_template, self._links)

    def _static_headers(self) -> str:
        lines = ["List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"]
        lines.append(f"Feedback-ID: {self.feedback_id}\r\n")
        lines.extend(hdr.header_line(name, value) for name, value in self._custom)
        return "".join(lines)

    # Per message ------------------------------------------------------------
    def _now(self) -> str:
        now = int(self.clock())
        if now != self._date_second:
            self._date_second, self._date = now, formatdate(now, usegmt=True)
        return self._date

    def _prepare(self, ledger_id: int, contact: dict[str, Any], list_id: Any) -> _Prepared:
        """Build the context, tokens and subject of one message."""
        recipient = hdr.normalise_address("email", _text(contact.get("email")))
        contact_id = _uuid(contact["id"]) if contact.get("id") else NIL_UUID
        attributes = dict(contact.get("attributes") or {})
        person = dict(attributes)
        person.update(
            id=str(contact_id) if contact.get("id") else "",
            email=recipient,
            name=_text(contact.get("name")),
            attributes=attributes,
        )
        base, key, tenant = self.base_url, self.secret_key, self.tenant_id
        if self.preview:
            unsubscribe_token = "preview"  # noqa: S105 (not a secret)
            unsubscribe = f"{base}/u/preview"
            preferences = f"{base}/p/preview"
            view = f"{base}/v/preview"
        else:
            unsubscribe_token = tokens.make_unsubscribe_token(
                key, tenant, contact_id, _uuid(list_id) if list_id else None
            )
            unsubscribe = tokens.unsubscribe_url(base, unsubscribe_token)
            preferences = tokens.preferences_url(
                base, tokens.make_preferences_token(key, tenant, contact_id)
            )
            view = tokens.view_url(base, tokens.make_view_token(key, tenant, ledger_id))
        context: dict[str, Any] = {
            "contact": person,
            "attributes": attributes,
            "campaign": self._campaign_context,
            "tenant": self._tenant_context,
            "unsubscribe_url": unsubscribe,
            "preferences_url": preferences,
            "view_in_browser_url": view,
            # A transactional message's caller data, by its documented name.
            "data": contact.get("data") or {},
        }
        subject = self._constant_subject
        if subject is None:
            subject = TEXT_SANDBOX.render_field("subject", self._subject, context, self.limits)
        # APPSEC: a contact attribute must not be able to add a header line.
        hdr.refuse_line_breaks("subject", subject)
        if self._has_preheader:
            context["_sm_preheader"] = TEXT_SANDBOX.render_field(
                "preheader", self._preheader, context, self.limits
            )
        links: dict[str, str] = {}
        if self.tracking:
            mint, click_base = self._mint_click, f"{base}/t/c/"
            links = {key: click_base + mint(link_id, ledger_id) for key, link_id in self._link_keys}
            open_token = self._signer.open_pixel(self._tenant_bytes, ledger_id)
            context["_sm_open_url"] = f"{base}/t/o/{open_token}.gif"
        return _Prepared(
            context=context,
            subject=subject,
            recipient=recipient,
            message_id=f"<{ledger_id}{self._message_id_suffix}",
            envelope_from=(
                f"{verp_local_part(self._tenant_bytes, ledger_id, key)}@{self.bounce_domain}"
            ),
            list_unsubscribe=(
                f"<{unsubscribe}>, <mailto:unsubscribe@{self.bounce_domain}"
                f"?subject=unsubscribe-{unsubscribe_token}>"
            ),
            date=self._now(),
            links=links,
        )

    def render_parts(
        self, ledger_id: int, contact: dict[str, Any], list_id: Any = None
    ) -> RenderedParts:
        """Render the personalised subject, HTML, text and header values."""
        prepared = self._prepare(ledger_id, contact, list_id)
        context = prepared.context
        html = ""
        if not self.text_only:
            html = HTML_SANDBOX.render_field("html", self._html, context, self.limits)
            html = self._links.fill(html, prepared.links)
            if self.inline_per_message:
                html = html_tools.inline_css(html)
            # Parts end with a line break, as EmailMessage.set_content makes them.
            if not html.endswith("\n"):
                html += "\n"
        text = TEXT_SANDBOX.render_field("text", self._text_template, context, self.limits)
        text = self._links.fill(text, prepared.links)
        if not text.endswith("\n"):
            text += "\n"
        header_values: list[tuple[str, Any]] = [("From", self._from_ref)]
        if self._reply_to_ref is not None:
            header_values.append(("Reply-To", self._reply_to_ref))
        header_values += [
            ("To", prepared.recipient),
            ("Subject", prepared.subject),
            ("Date", prepared.date),
            ("Message-ID", prepared.message_id),
            ("List-Unsubscribe", prepared.list_unsubscribe),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Feedback-ID", self.feedback_id),
            *self._custom,
        ]
        return RenderedParts(
            prepared.subject,
            html,
            text,
            header_values,
            prepared.message_id,
            prepared.envelope_from,
            prepared.recipient,
        )

    def render(self, ledger_id: int, contact: dict[str, Any], list_id: Any = None) -> RenderedMessage:
        """Render one recipient's message (fast path unless a compose hook exists)."""
        if self.uses_compose_hook:
            return self._render_with_hook(ledger_id, self.render_parts(ledger_id, contact, list_id))
        prepared = self._prepare(ledger_id, contact, list_id)
        head = self._head(prepared)
        if self.inline_per_message:
            parts = self.render_parts(ledger_id, contact, list_id)
            raw = self._skeleton.splice(head, quoted_printable(parts.text), quoted_printable(parts.html))
        else:
            context, links = prepared.context, prepared.links
            slots = (dict(zip(links, quoted_printable_many(list(links.values())), strict=True))
                     if links else {})

            def fill(run: str) -> str:
                return self._links.fill(run, links)

            html, html_ends_line = b"", True
            if not self.text_only:
                html, html_ends_line = HTML_SANDBOX.render_field_encoded(
                    "html", self._html, context, self.limits, self._html_literals,
                    quoted_printable_many, SOFT_BREAK, slots, fill,
                )
            text, text_ends_line = TEXT_SANDBOX.render_field_encoded(
                "text", self._text_template, context, self.limits, self._text_literals,
                quoted_printable_many, SOFT_BREAK, slots, fill,
            )
            raw = self._skeleton.splice(
                head,
                text if text_ends_line else text + b"=\r\n\r\n",
                html if html_ends_line else html + b"=\r\n\r\n",
            )
        return RenderedMessage(raw, prepared.message_id, prepared.envelope_from, prepared.recipient,
                               crlf=True)

    def _head(self, prepared: _Prepared) -> bytes:
        lines = [f"From: {self._from}\r\n"]
        if self._reply_to is not None:
            lines.append(f"Reply-To: {self._reply_to}\r\n")
        lines.append(
            f"To: {prepared.recipient}\r\n"
            f"Subject: {hdr.encode_unstructured('Subject', prepared.subject)}\r\n"
            f"Date: {prepared.date}\r\n"
            f"Message-ID: {prepared.message_id}\r\n"
            f"List-Unsubscribe: {_fold_list(prepared.list_unsubscribe)}\r\n"
        )
        return "".join(lines).encode("ascii")

    def render_reference(
        self, ledger_id: int, contact: dict[str, Any], list_id: Any = None
    ) -> RenderedMessage:
        """Render through the standard library's ``EmailMessage`` (no hook)."""
        parts = self.render_parts(ledger_id, contact, list_id)
        message = build_reference(parts.headers, parts.text, self._reference_html(parts))
        return RenderedMessage(
            message.as_bytes(), parts.message_id, parts.envelope_from, parts.recipient
        )

    def _reference_html(self, parts: RenderedParts) -> str | None:
        return None if self.text_only else parts.html

    def _render_with_hook(self, ledger_id: int, parts: RenderedParts) -> RenderedMessage:
        message = build_reference(parts.headers, parts.text, self._reference_html(parts))
        self.plugin_manager.compose_message(
            message,
            {
                "tenant_id": self.tenant_id,
                "campaign_id": self.campaign_id,
                "ledger_id": ledger_id,
                "recipient": parts.recipient,
                "transport": self.campaign.get("transport", ""),
            },
        )
        for name, value in message.items():
            hdr.refuse_line_breaks(f"headers.{name}", str(value).replace("\r\n ", " "))
        return RenderedMessage(
            message.as_bytes(), parts.message_id, parts.envelope_from, parts.recipient
        )


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _encoded_literals(
    sandbox: TemplateSandbox, template: Any, links: LinkSlots
) -> dict[str, bytes | tuple[bytes | str, ...]]:
    """Pre-encode a template's literal chunks; one holding link markers becomes pieces."""
    encoded: dict[str, bytes | tuple[bytes | str, ...]] = {}
    for literal in sandbox.literal_strings(template):
        pieces = links.split_literal(literal)
        if pieces is not None:
            encoded[literal] = tuple(
                value if kind == "link" else joinable_quoted_printable(value)
                for kind, value in pieces
            )
        elif len(literal) >= 16:
            encoded[literal] = joinable_quoted_printable(literal)
    return encoded


def _fold_list(value: str) -> str:
    return value.replace(">, <", ">,\r\n <")


def check_sender(campaign: dict[str, Any]) -> None:
    """Validate the header-bound campaign fields; errors name the field."""
    hdr.normalise_address("from_email", _text(campaign.get("from_email")))
    hdr.refuse_line_breaks("from_name", _text(campaign.get("from_name")))
    if _text(campaign.get("reply_to")).strip():
        hdr.parse_reply_to("reply_to", _text(campaign.get("reply_to")))
    hdr.refuse_line_breaks("subject", _text(campaign.get("subject")))
    hdr.check_custom_headers(campaign.get("headers"))


__all__ = [
    "CampaignRenderer",
    "RenderedMessage",
    "RenderedParts",
    "ValidationError",
    "check_sender",
]
