"""The ``mailgun`` transport (messages API) and its signed webhooks.

Settings (``[plugins.mailgun]`` / ``SWIFTMAIL_PLUGIN_MAILGUN_*``):
``api_key``; ``domain`` (the Mailgun sending domain); ``base_url`` (default
https://api.mailgun.net; https://api.eu.mailgun.net for the EU region);
``webhook_signing_key``; ``timeout`` (seconds); ``batch_size`` (1000).

Sending: ``POST /v3/{domain}/messages`` as multipart form data. Messages
with identical content share one request: every address in ``to`` and a
``recipient-variables`` object giving each its tenant and ledger id, which
``v:swiftmail_ledger=%recipient.swiftmail_ledger%`` turns into user
variables Mailgun returns with every event. Personalised content is one
request per message. Answers: 200 accepted; 429 and 5xx deferred,
honouring Retry-After; 401/403 deferred; other 4xx rejected.

Webhooks: ``POST /hooks/mailgun/events`` (JSON). APPSEC: accepted only when
``signature.signature`` is the HMAC-SHA256 of timestamp + token keyed with
the webhook signing key, the timestamp is recent and the token unseen.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

from swiftmail_core.errors import ConfigurationError
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

DEFAULT_BASE_URL = "https://api.mailgun.net"
WEBHOOK_PATH = "/hooks/mailgun/events"
MAX_SIGNATURE_AGE = 15 * 60


def _multipart(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    boundary = "swiftmail-" + secrets.token_hex(12)
    chunks = []
    for name, value in fields:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode()
            + value.encode() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class MailgunTransport:
    """Send through Mailgun's messages API."""

    name = "mailgun"

    def __init__(self, options: dict[str, Any]) -> None:
        self.api_key = str(options.get("api_key", ""))
        self.domain = str(options.get("domain", ""))
        self.client = KeepAliveClient(str(options.get("base_url", DEFAULT_BASE_URL)),
                                      float(options.get("timeout", 30)))
        self.batch_size = int(options.get("batch_size", 1000))
        token = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        self.authorization = f"Basic {token}"

    def _fields(self, parts: MessageParts,
                group: Sequence[tuple[OutboundMessage, MessageParts]]) -> list[tuple[str, str]]:
        sender = f"{parts.from_name} <{parts.from_email}>" if parts.from_name else parts.from_email
        fields = [("from", sender)]
        fields += [("to", message.recipient) for message, _ in group]
        fields.append(("subject", parts.subject))
        if parts.text:
            fields.append(("text", parts.text))
        if parts.html:
            fields.append(("html", parts.html))
        if parts.reply_to:
            fields.append(("h:Reply-To", parts.reply_to))
        for name, value in parts.headers:
            if name.lower() != "message-id" or len(group) == 1:
                fields.append((f"h:{name}", value))
        fields.append(("recipient-variables", json.dumps({
            message.recipient: {"swiftmail_tenant": str(message.tenant_id),
                                "swiftmail_ledger": str(message.ledger_id)}
            for message, _ in group})))
        fields.append(("v:swiftmail_tenant", "%recipient.swiftmail_tenant%"))
        fields.append(("v:swiftmail_ledger", "%recipient.swiftmail_ledger%"))
        return fields

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Group identical content (and subject) into one request each."""
        if not self.domain:
            raise ConfigurationError("plugins.mailgun.domain is not set: set "
                                     "SWIFTMAIL_PLUGIN_MAILGUN_DOMAIN")
        groups: dict[tuple[object, ...], list[tuple[OutboundMessage, MessageParts]]] = (
            defaultdict(list))
        for message in messages:
            parts = split_message(message.raw)
            # NOTE: recipient addresses must be unique within one request.
            # NOTE: h: headers are per request, so only equal headers (bar
            # Message-ID, which Mailgun then sets per recipient) may share one.
            shared = tuple(h for h in parts.headers if h[0].lower() != "message-id")
            key = (*parts.content_key(), parts.subject, shared)
            groups[key].append((message, parts))
        results: list[SendResult] = []
        for group in groups.values():
            seen: set[str] = set()
            chunk: list[tuple[OutboundMessage, MessageParts]] = []
            for item in group:
                if item[0].recipient.lower() in seen or len(chunk) >= self.batch_size:
                    results.extend(self._send_group(chunk))
                    chunk, seen = [], set()
                chunk.append(item)
                seen.add(item[0].recipient.lower())
            if chunk:
                results.extend(self._send_group(chunk))
        return results

    def _send_group(self, group: Sequence[tuple[OutboundMessage, MessageParts]]
                    ) -> list[SendResult]:
        body, content_type = _multipart(self._fields(group[0][1], group))
        try:
            response = self.client.post(f"/v3/{self.domain}/messages", body, {
                "Authorization": self.authorization, "Content-Type": content_type})
        except OutcomeUnknown as ex:
            # The request went out: the messages may be on their way. Never resend;
            # the provider's events settle them (state 'unknown').
            return [SendResult(m.ledger_id, Outcome.UNKNOWN, reason=f"mailgun answer lost: {ex}")
                    for m, _ in group]
        except OSError as ex:
            return [SendResult(m.ledger_id, Outcome.DEFERRED, reason=f"mailgun unreachable: {ex}")
                    for m, _ in group]
        outcome = outcome_for_status(response.status)
        provider_id = None
        if outcome is Outcome.ACCEPTED:
            try:
                provider_id = str(json.loads(response.body).get("id", "")).strip("<>") or None
            except ValueError:
                provider_id = None
        reason = "" if outcome is Outcome.ACCEPTED else (
            f"mailgun {response.status}: {response.body[:300].decode('utf-8', 'replace')}")
        return [
            SendResult(message.ledger_id, outcome, provider_message_id=provider_id,
                       retry_after=retry_after(response.headers)
                       if outcome is Outcome.DEFERRED else None,
                       reason=reason,
                       bounce_class="policy" if outcome is Outcome.REJECTED else None)
            for message, _ in group
        ]

    def close(self) -> None:
        """Close this thread's connection."""
        self.client.close()


# Webhooks --------------------------------------------------------------------------

def signature_valid(signing_key: str, timestamp: str, token: str, signature: str) -> bool:
    """Return True when ``signature`` is HMAC-SHA256(key, timestamp + token) in hex."""
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(),
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _bounce_class(data: dict[str, Any]) -> str:
    status = str((data.get("delivery-status") or {}).get("code", ""))
    if data.get("reason") in ("suppress-bounce", "suppress-complaint", "suppress-unsubscribe"):
        return "policy"
    return "hard" if status in ("550", "551", "553", "") else "policy"


def map_event(data: dict[str, Any]) -> ProviderEvent | None:
    """Map one Mailgun ``event-data`` object to a provider event, or None."""
    variables = data.get("user-variables") or {}
    try:
        tenant_id = uuid.UUID(str(variables.get("swiftmail_tenant")))
        ledger_id = int(str(variables.get("swiftmail_ledger")))
    except ValueError:
        return None
    event = str(data.get("event", ""))
    kind: str | None = {
        "delivered": "delivered", "opened": "opened", "clicked": "clicked",
        "unsubscribed": "unsubscribed", "complained": "complained",
    }.get(event)
    bounce = None
    if event == "failed":
        permanent = data.get("severity") == "permanent"
        kind = "bounced" if permanent else "deferred"
        bounce = _bounce_class(data) if permanent else None
    if kind is None or not data.get("recipient"):
        return None
    occurred = datetime.datetime.fromtimestamp(float(data.get("timestamp") or time.time()),
                                               datetime.UTC)
    return ProviderEvent(
        tenant_id=tenant_id, ledger_id=ledger_id, type=kind, email=str(data["recipient"]),
        source_key=f"mailgun:{data.get('id')}:{kind}", occurred_at=occurred, bounce_class=bounce,
        detail={"provider": "mailgun",
                "reason": str((data.get("delivery-status") or {}).get("message", ""))[:500]})


class EventWebhook:
    """``POST /hooks/mailgun/events``: verify, map, apply."""

    public = True
    tenant_transaction = False
    #: APPSEC: read unauthenticated, so bounded before the signature is checked.
    max_body_bytes = 5_000_000

    def __init__(self, options: dict[str, Any], plugins: Any = None,
                 clock: Any = time.time) -> None:
        self.plugins = plugins
        self.signing_key = str(options.get("webhook_signing_key", ""))
        self.clock = clock
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def _fresh_token(self, token: str) -> bool:
        with self._lock:
            if token in self._tokens:
                return False
            self._tokens[token] = None
            while len(self._tokens) > 10_000:
                self._tokens.popitem(last=False)
            return True

    def on_post(self, req: Any, resp: Any) -> None:
        """Accept a signed event (200), or refuse it (401/400)."""
        import falcon

        if not self.signing_key:  # not configured: refuse without reading the body
            raise falcon.HTTPUnauthorized(title="Invalid signature",
                                          description="the Mailgun webhook is not set up")
        try:
            payload = json.loads(req.bounded_stream.read())
            signature = payload["signature"]
            timestamp, token = str(signature["timestamp"]), str(signature["token"])
            digest = str(signature["signature"])
            data = payload["event-data"]
        except (ValueError, KeyError, TypeError) as ex:
            raise falcon.HTTPBadRequest(title="Invalid webhook body", description=str(ex)) from ex
        # APPSEC: HMAC over timestamp + token with our signing key, recent, never replayed.
        if (not self.signing_key or not signature_valid(self.signing_key, timestamp, token, digest)
                or abs(self.clock() - float(timestamp)) > MAX_SIGNATURE_AGE
                or not self._fresh_token(token)):
            raise falcon.HTTPUnauthorized(title="Invalid signature",
                                          description="the webhook signature did not verify")
        event = map_event(data) if isinstance(data, dict) else None
        if event is not None:
            apply_provider_events([event], self.plugins)
        resp.media = {"message": "ok"}


@hookimpl
def swiftmail_register_transports(settings: Settings) -> list[MailgunTransport]:
    """Register the ``mailgun`` transport."""
    return [MailgunTransport(settings.plugin_settings("mailgun"))]


@hookimpl
def swiftmail_register_routes(app: Any, settings: Settings, plugin_manager: Any) -> None:
    """Add the webhook endpoint."""
    app.add_route(WEBHOOK_PATH, EventWebhook(settings.plugin_settings("mailgun"),
                                             plugins=plugin_manager))


@hookimpl
def swiftmail_secret_settings() -> dict[str, list[str]]:
    """Declare the API key and webhook signing key secret."""
    return {"mailgun": ["api_key", "webhook_signing_key"]}
