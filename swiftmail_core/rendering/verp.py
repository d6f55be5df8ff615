"""Signed VERP return paths: a bounce maps back to exactly one ledger row.

The envelope sender of every campaign message is
``b{base32(tenant 16 bytes + ledger id 6 bytes + HMAC[:16])}@{bounce domain}``:
62 characters of local part (RFC 5321 allows 64), lower-case base32 so that
a mail system changing the case of the local part cannot break it.
``parse_verp(address, secret_key)`` verifies the signature and returns the
tenant and ledger id, or raises ``ValidationError``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import uuid

from swiftmail_core.crypto import derive_key
from swiftmail_core.errors import ValidationError

_PURPOSE = "verp"
_PREFIX = "b"
_LEDGER_BYTES = 6
_MAC_BYTES = 16
_INVALID = "not a SwiftMail bounce address"


@dataclasses.dataclass(frozen=True)
class VerpAddress:
    """The ledger row a bounce address points to."""

    tenant_id: uuid.UUID
    ledger_id: int


def _mac(secret_key: str, payload: bytes) -> bytes:
    return hmac.digest(derive_key(secret_key, _PURPOSE), payload, "sha256")[:_MAC_BYTES]


def verp_local_part(tenant: bytes, ledger_id: int, secret_key: str) -> str:
    """Return the signed VERP local part from a packed tenant id."""
    if not 0 <= ledger_id < 1 << (8 * _LEDGER_BYTES):
        raise ValueError(f"ledger id out of VERP range: {ledger_id}")
    payload = tenant + ledger_id.to_bytes(_LEDGER_BYTES, "big")
    encoded = base64.b32encode(payload + _mac(secret_key, payload)).decode("ascii")
    return _PREFIX + encoded.rstrip("=").lower()


def verp_return_path(
    bounce_domain: str, tenant_id: uuid.UUID, ledger_id: int, secret_key: str
) -> str:
    """Return the envelope sender for one ledger row."""
    return f"{verp_local_part(tenant_id.bytes, ledger_id, secret_key)}@{bounce_domain}"


def parse_verp(address: str, secret_key: str) -> VerpAddress:
    """Verify a VERP bounce address and return its tenant and ledger id."""
    local = address.strip().strip("<>").rpartition("@")[0] if "@" in address else address
    local = local.lower()
    expected_bytes = 16 + _LEDGER_BYTES + _MAC_BYTES
    encoded_length = (expected_bytes * 8 + 4) // 5
    if not local.startswith(_PREFIX) or len(local) != 1 + encoded_length:
        raise ValidationError.for_field("address", _INVALID)
    encoded = local[1:].upper()
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError) as ex:
        raise ValidationError.for_field("address", _INVALID) from ex
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    # APPSEC: constant-time check; a forged bounce cannot suppress an address.
    if len(raw) != expected_bytes or not hmac.compare_digest(_mac(secret_key, payload), mac):
        raise ValidationError.for_field("address", _INVALID)
    return VerpAddress(uuid.UUID(bytes=payload[:16]), int.from_bytes(payload[16:], "big"))
