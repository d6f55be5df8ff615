"""The body of a platform hand-off over the network: a JSON batch of messages.

One owner of the format, used by the relay transport (``encode_batch``) and
the relay's platform intake (``decode_batch``)::

    {"request_id": "<random hex>",
     "messages": [{"tenant_id": "<uuid>", "campaign_id": "<uuid>" | null,
                   "mail_from": "bounces+...@bounce.example",
                   "recipients": [{"address": "a@example.com", "ledger_id": 42}],
                   "warmup_plan": {...} | null,
                   "raw": "<base64 of the DKIM-signed message>"}]}

``request_id`` makes every body unique, so a signature never legitimately
repeats (the intake refuses a repeat as a replay). The relay works out the
From domain itself from the bytes it will deliver.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from swiftmail_relay.message_checks import from_domain, header_problem
from swiftmail_relay.spool import Envelope, Recipient, new_id
from swiftmail_relay.submission import _ADDRESS

from swiftmail_core.errors import ValidationError

MAX_MESSAGES = 1000


def encode_batch(items: Sequence[tuple[Envelope, bytes]]) -> bytes:
    """Return the request body for prepared (envelope, bytes) pairs."""
    return json.dumps({
        "request_id": secrets.token_hex(16),
        "messages": [{
            "tenant_id": envelope.tenant_id, "campaign_id": envelope.campaign_id,
            "mail_from": envelope.mail_from,
            "recipients": [{"address": r.address, "ledger_id": r.ledger_id}
                           for r in envelope.recipients],
            "warmup_plan": envelope.warmup_plan,
            "raw": base64.b64encode(raw).decode("ascii"),
        } for envelope, raw in items],
    }, separators=(",", ":")).encode()


def encoded_size(raw: bytes) -> int:
    """Return about how many body bytes one message of ``raw`` bytes takes."""
    return (len(raw) + 2) // 3 * 4 + 512


def decode_batch(body: bytes, *, max_message_size: int) -> list[tuple[Envelope, bytes]]:
    """Return spool envelopes and bytes; raise ValidationError naming the field."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValidationError.for_field("body", "is not a JSON document") from None
    if not isinstance(document, dict):
        raise ValidationError.for_field("body", "must be a JSON object")
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError.for_field("messages", "must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise ValidationError.for_field("messages", f"at most {MAX_MESSAGES} per request")
    return [_decode_one(item, f"messages[{index}]", max_message_size)
            for index, item in enumerate(messages)]


def _decode_one(item: Any, where: str, max_message_size: int) -> tuple[Envelope, bytes]:
    if not isinstance(item, dict):
        raise ValidationError.for_field(where, "must be an object")
    tenant_id = _uuid(item.get("tenant_id"), f"{where}.tenant_id", required=True)
    campaign_id = _uuid(item.get("campaign_id"), f"{where}.campaign_id", required=False)
    mail_from = item.get("mail_from")
    if not isinstance(mail_from, str) or (mail_from and not _ADDRESS.match(mail_from)):
        raise ValidationError.for_field(f"{where}.mail_from", "must be an address or empty")
    recipients = item.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise ValidationError.for_field(f"{where}.recipients", "must be a non-empty list")
    decoded = []
    for index, recipient in enumerate(recipients):
        field = f"{where}.recipients[{index}]"
        address = recipient.get("address") if isinstance(recipient, dict) else None
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise ValidationError.for_field(f"{field}.address", "must be an email address")
        ledger_id = recipient.get("ledger_id")
        if ledger_id is not None and (not isinstance(ledger_id, int) or isinstance(
                ledger_id, bool) or ledger_id <= 0):
            raise ValidationError.for_field(f"{field}.ledger_id", "must be a positive integer")
        decoded.append(Recipient(address, ledger_id=ledger_id))
    plan = item.get("warmup_plan")
    if plan is not None and not isinstance(plan, dict):
        raise ValidationError.for_field(f"{where}.warmup_plan", "must be an object or null")
    encoded = item.get("raw")
    if not isinstance(encoded, str) or len(encoded) > (max_message_size + 2) // 3 * 4:
        raise ValidationError.for_field(
            f"{where}.raw", f"must be base64 of at most {max_message_size} bytes")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError.for_field(f"{where}.raw", "is not base64") from None
    problem = header_problem(raw)
    if problem:
        raise ValidationError.for_field(f"{where}.raw", problem)
    envelope = Envelope(id=new_id(), mail_from=mail_from, recipients=decoded,
                        tenant_id=str(tenant_id),
                        campaign_id=str(campaign_id) if campaign_id else None,
                        source="intake", sender_domain=from_domain(raw), warmup_plan=plan)
    return envelope, raw


def _uuid(value: Any, field: str, *, required: bool) -> uuid.UUID | None:
    if value is None and not required:
        return None
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else _fail(field)
    except ValueError:
        return _fail(field)


def _fail(field: str) -> uuid.UUID:
    raise ValidationError.for_field(field, "must be a UUID")
