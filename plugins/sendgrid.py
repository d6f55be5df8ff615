"""The ``sendgrid`` transport (v3 Mail Send) and its signed Event Webhook.

Settings (``[plugins.sendgrid]`` / ``SWIFTMAIL_PLUGIN_SENDGRID_*``):
``api_key``; ``base_url`` (default https://api.sendgrid.com);
``webhook_public_key`` (the Event Webhook verification key, base64 DER, as
SendGrid shows it); ``timeout`` (seconds); ``max_personalizations`` (1000).

Sending: messages whose content is identical (same sender, text and html)
share one request, one personalization each (subject and headers may
differ per personalization); personalised content needs one request per
message. Each personalization carries ``custom_args`` with the tenant and
ledger id, which SendGrid returns in every event. Answers: 202 accepted;
429 and 5xx deferred, honouring Retry-After; 401/403 deferred (credentials
are an operator problem); other 4xx rejected.

Event Webhook: ``POST /hooks/sendgrid/events``. APPSEC: the body is accepted
only with a valid ECDSA P-256 signature over timestamp + body made with
SendGrid's key for our account, and events only count for ledger rows of
the tenant they name.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.sending.http_client import (
    KeepAliveClient,
    OutcomeUnknown,
    outcome_for_status,
    retry_after,
)
from swiftmail_core.sending.mime_parts import MessageParts, split_message
from swiftmail_core.sending.provider_events import (
    ProviderEvent,
    apply_provider_events,
)
from swiftmail_core.settings import Settings
from swiftmail_core.transports import OutboundMessage, Outcome, SendResult

DEFAULT_BASE_URL = "https://api.sendgrid.com"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
WEBHOOK_PATH = "/hooks/sendgrid/events"
#: Headers SendGrid refuses in ``headers`` (it sets them itself).
RESERVED = frozenset({"x-sg-id", "x-sg-eid", "message-id"})


class SendGridTransport:
    """Send through SendGrid's v3 Mail Send API."""

    name = "sendgrid"

    def __init__(self, options: dict[str, Any]) -> None:
        self.api_key = str(options.get("api_key", ""))
        self.client = KeepAliveClient(str(options.get("base_url", DEFAULT_BASE_URL)),
                                      float(options.get("timeout", 30)))
        self.max_personalizations = int(options.get("max_personalizations", 1000))

    def _body(self, parts: MessageParts, group: Sequence[tuple[OutboundMessage, MessageParts]]
              ) -> dict[str, Any]:
        sender: dict[str, str] = {"email": parts.from_email}
        if parts.from_name:
            sender["name"] = parts.from_name
        content = []
        if parts.text:
            content.append({"type": "text/plain", "value": parts.text})
        if parts.html:
            content.append({"type": "text/html", "value": parts.html})
        personalizations = []
        for message, own in group:
            personalization: dict[str, Any] = {
                "to": [{"email": message.recipient}],
                "subject": own.subject or " ",
                "custom_args": {"swiftmail_tenant": str(message.tenant_id),
                                "swiftmail_ledger": str(message.ledger_id)},
            }
            headers = {name: value for name, value in own.headers
                       if name.lower() not in RESERVED and value}
            if headers:
                personalization["headers"] = headers
            personalizations.append(personalization)
        body: dict[str, Any] = {"personalizations": personalizations, "from": sender,
                                "content": content}
        if parts.reply_to:
            body["reply_to"] = {"email": parts.reply_to}
        return body

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Group identical content into personalizations; one request per group."""
        groups: dict[tuple[object, ...], list[tuple[OutboundMessage, MessageParts]]] = (
            defaultdict(list))
        for message in messages:
            parts = split_message(message.raw)
            groups[parts.content_key()].append((message, parts))
        results: list[SendResult] = []
        for group in groups.values():
            for start in range(0, len(group), self.max_personalizations):
                chunk = group[start:start + self.max_personalizations]
                results.extend(self._send_group(chunk))
        return results

    def _send_group(self, group: Sequence[tuple[OutboundMessage, MessageParts]]
                    ) -> list[SendResult]:
        body = json.dumps(self._body(group[0][1], group)).encode()
        try:
            response = self.client.post("/v3/mail/send", body, {
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json"})
        except OutcomeUnknown as ex:
            # The request went out: the messages may be on their way. Never resend;
            # the provider's events settle them (state 'unknown').
            return [SendResult(m.ledger_id, Outcome.UNKNOWN, reason=f"sendgrid answer lost: {ex}")
                    for m, _ in group]
        except OSError as ex:
            return [SendResult(m.ledger_id, Outcome.DEFERRED, reason=f"sendgrid unreachable: {ex}")
                    for m, _ in group]
        outcome = outcome_for_status(response.status)
        provider_id = response.headers.get("x-message-id")
        reason = "" if outcome is Outcome.ACCEPTED else (
            f"sendgrid {response.status}: {response.body[:300].decode('utf-8', 'replace')}")
        return [
            SendResult(message.ledger_id, outcome,
                       provider_message_id=provider_id if outcome is Outcome.ACCEPTED else None,
                       retry_after=retry_after(response.headers)
                       if outcome is Outcome.DEFERRED else None,
                       reason=reason,
                       bounce_class="policy" if outcome is Outcome.REJECTED else None)
            for message, _ in group
        ]

    def close(self) -> None:
        """Close this thread's connection."""
        self.client.close()


# The Event Webhook ---------------------------------------------------------------

def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """Load SendGrid's verification key (base64 DER, or PEM)."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode(text))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid webhook key must be an ECDSA public key")
    return key


def verify_signature(key: ec.EllipticCurvePublicKey, signature_b64: str, timestamp: str,
                     body: bytes) -> bool:
    """Return True when ``signature_b64`` signs timestamp + body with ``key``."""
    try:
        key.verify(base64.b64decode(signature_b64), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _bounce_class(event: dict[str, Any]) -> str:
    if event.get("event") == "blocked" or event.get("type") == "blocked":
        return "policy"
    if event.get("event") == "dropped":
        return "policy"
    status = str(event.get("status", ""))
    return "hard" if status.startswith("5.1") or not status else (
        "mailbox_full" if status.startswith("5.2.2") else "policy")


EVENT_MAP = {
    "delivered": "delivered", "deferred": "deferred", "bounce": "bounced",
    "blocked": "bounced", "dropped": "bounced", "spamreport": "complained",
    "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed",
    "open": "opened", "click": "clicked",
}


def map_events(payload: Any) -> list[ProviderEvent]:
    """Map SendGrid events (a JSON list) to provider events; unknown ones are skipped."""
    mapped = []
    for event in payload if isinstance(payload, list) else []:
        if not isinstance(event, dict):
            continue
        kind = EVENT_MAP.get(str(event.get("event")))
        try:
            tenant_id = uuid.UUID(str(event.get("swiftmail_tenant")))
            ledger_id = int(str(event.get("swiftmail_ledger")))
        except ValueError:
            continue
        if kind is None or not event.get("email"):
            continue
        occurred = datetime.datetime.fromtimestamp(int(event.get("timestamp", 0)) or
                                                   datetime.datetime.now().timestamp(),
                                                   datetime.UTC)
        mapped.append(ProviderEvent(
            tenant_id=tenant_id, ledger_id=ledger_id, type=kind, email=str(event["email"]),
            source_key=f"sendgrid:{event.get('sg_event_id') or event.get('sg_message_id')}:{kind}",
            occurred_at=occurred,
            bounce_class=_bounce_class(event) if kind == "bounced" else None,
            is_machine=bool(event.get("sg_machine_open")),
            detail={"provider": "sendgrid", "reason": str(event.get("reason", ""))[:500],
                    **({"url": str(event["url"])} if event.get("url") else {})}))
    return mapped


class EventWebhook:
    """``POST /hooks/sendgrid/events``: verify, map, apply."""

    public = True
    tenant_transaction = False
    #: APPSEC: read unauthenticated, so bounded before the signature is checked.
    max_body_bytes = 5_000_000

    def __init__(self, options: dict[str, Any], plugins: Any = None) -> None:
        self.plugins = plugins
        value = str(options.get("webhook_public_key", ""))
        self.key = load_public_key(value) if value else None

    def on_post(self, req: Any, resp: Any) -> None:
        """Accept a signed batch of events (204), or refuse it (401/400)."""
        import falcon

        if self.key is None:  # not configured: refuse without reading the body
            raise falcon.HTTPUnauthorized(title="Invalid signature",
                                          description="the SendGrid Event Webhook is not set up")
        body = req.bounded_stream.read()
        signature = req.get_header(SIGNATURE_HEADER) or ""
        timestamp = req.get_header(TIMESTAMP_HEADER) or ""
        # APPSEC: unsigned or badly signed bodies never reach the ledger.
        if self.key is None or not verify_signature(self.key, signature, timestamp, body):
            raise falcon.HTTPUnauthorized(title="Invalid signature",
                                          description="the Event Webhook signature did not verify")
        try:
            payload = json.loads(body)
        except ValueError as ex:
            raise falcon.HTTPBadRequest(title="Invalid JSON", description=str(ex)) from ex
        apply_provider_events(map_events(payload), self.plugins)
        resp.status = falcon.HTTP_204


@hookimpl
def swiftmail_register_transports(settings: Settings) -> list[SendGridTransport]:
    """Register the ``sendgrid`` transport."""
    return [SendGridTransport(settings.plugin_settings("sendgrid"))]


@hookimpl
def swiftmail_register_routes(app: Any, settings: Settings, plugin_manager: Any) -> None:
    """Add the Event Webhook endpoint."""
    app.add_route(WEBHOOK_PATH, EventWebhook(settings.plugin_settings("sendgrid"),
                                             plugins=plugin_manager))


@hookimpl
def swiftmail_secret_settings() -> dict[str, list[str]]:
    """Declare the API key secret (``config show`` hides it)."""
    return {"sendgrid": ["api_key"]}
