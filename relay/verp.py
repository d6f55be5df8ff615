"""VERP return paths: ``b+TOKEN@bounce-domain`` maps a bounce to one message.

The token carries the tenant and the ledger row (0 when the message has
none, as for SMTP submissions) and a truncated HMAC, so a forged bounce
cannot mark another tenant's message. Lower-case base32: survives MTAs
that fold the local part's case.
"""

from __future__ import annotations

import base64
import hmac
import struct
import uuid

from swiftmail_core import crypto

PURPOSE = "relay-verp"
PREFIX = "b+"
MAC_BYTES = 6


def encode(secret_key: str, tenant_id: uuid.UUID | str, ledger_id: int | None, domain: str) -> str:
    """Return the VERP address for a message."""
    payload = uuid.UUID(str(tenant_id)).bytes + struct.pack("!Q", ledger_id or 0)
    mac = crypto.sign(secret_key, PURPOSE, payload)[:MAC_BYTES]
    token = base64.b32encode(payload + mac).decode().rstrip("=").lower()
    return f"{PREFIX}{token}@{domain}"


def decode(secret_key: str, address: str) -> tuple[uuid.UUID, int | None] | None:
    """Return (tenant_id, ledger_id or None) for a genuine VERP address, else None."""
    local, _, _ = address.strip("<>").rpartition("@")
    if not local.lower().startswith(PREFIX):
        return None
    token = local[len(PREFIX):].upper()
    try:
        raw = base64.b32decode(token + "=" * (-len(token) % 8))
    except ValueError:
        return None
    if len(raw) != 16 + 8 + MAC_BYTES:
        return None
    payload, mac = raw[:24], raw[24:]
    # APPSEC: constant-time check; a forged token maps to nothing.
    if not hmac.compare_digest(crypto.sign(secret_key, PURPOSE, payload)[:MAC_BYTES], mac):
        return None
    ledger_id = struct.unpack("!Q", payload[16:])[0]
    return uuid.UUID(bytes=payload[:16]), ledger_id or None
