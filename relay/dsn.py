"""RFC 3464 delivery status notifications and RFC 5965 ARF reports.

``parse_report`` turns an incoming DSN or ARF complaint into per-recipient
findings; ``build_dsn`` writes the DSN this relay sends to the reverse path
of SMTP-submitted mail that bounced or expired (never to a null path).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import time
from email.message import Message

from swiftmail_relay.spool import EXPIRED, Envelope, Recipient


@dataclasses.dataclass(frozen=True)
class Finding:
    """One recipient's fate as a report tells it."""

    kind: str  # bounced | deferred | delivered | complained
    recipient: str
    status: str = ""
    diagnostic: str = ""
    feedback_type: str = ""
    original_return_path: str = ""


def _fields(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(block.strip() + "\n")
            for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]


def _address(value: str | None) -> str:
    if not value:
        return ""
    value = value.split(";", 1)[1] if ";" in value else value
    return email.utils.parseaddr(value.strip())[1] or value.strip().strip("<>")


def parse_report(raw: bytes) -> list[Finding]:
    """Return findings from a DSN (message/delivery-status) or ARF report."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    findings: list[Finding] = []
    original_return_path = ""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            inner_message = inner[0] if isinstance(inner, list) and inner else None
            if inner_message is None and isinstance(inner, str):
                inner_message = email.message_from_string(inner)
            if inner_message is not None and inner_message.get("Return-Path"):
                original_return_path = _address(inner_message.get("Return-Path"))
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            for block in _fields(part)[1:]:
                recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                action = (block.get("Action") or "").strip().lower()
                kind = {"failed": "bounced", "delayed": "deferred", "delivered": "delivered",
                        "relayed": "delivered", "expanded": "delivered"}.get(action)
                if recipient and kind:
                    findings.append(Finding(
                        kind, recipient, (block.get("Status") or "").strip(),
                        " ".join((block.get("Diagnostic-Code") or "").split()),
                        original_return_path=original_return_path))
        elif content_type == "message/feedback-report":
            blocks = _fields(part)
            report = blocks[0] if blocks else Message()
            recipient = _address(report.get("Original-Rcpt-To"))
            findings.append(Finding(
                "complained", recipient, feedback_type=(report.get("Feedback-Type") or "").strip(),
                original_return_path=original_return_path or _address(report.get("Original-Mail-From")),
            ))
    return findings


def build_dsn(envelope: Envelope, failed: list[Recipient], hostname: str, raw_headers: bytes) -> bytes:
    """Return an RFC 3464 DSN for ``failed`` recipients, addressed to the reverse path."""
    boundary = f"=_swiftmail_dsn_{envelope.id}"
    human = ["Your message could not be delivered to these recipients:", ""]
    blocks = []
    for recipient in failed:
        human.append(f"  <{recipient.address}>: {recipient.last_reply}")
        parts = recipient.last_reply.split(" ", 2)
        status = parts[1] if len(parts) > 1 and parts[1][:1] in "45" and "." in parts[1] else "5.0.0"
        if recipient.status == EXPIRED:
            status = "4.4.7"
        blocks.append(
            f"Final-Recipient: rfc822; {recipient.address}\r\nAction: failed\r\n"
            f"Status: {status}\r\nDiagnostic-Code: smtp; {recipient.last_reply}\r\n")
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{envelope.mail_from}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(time.time())}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"Arrival-Date: {email.utils.formatdate(envelope.created_at)}",
        "",
        "\r\n".join(blocks),
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    text = "\r\n".join(lines).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return text + b"\r\n" + raw_headers.rstrip(b"\r\n") + b"\r\n" + tail
