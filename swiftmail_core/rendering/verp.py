"""Signed VERP return paths: a bounce maps back to exactly one ledger row.

The envelope sender of every campaign message is
``b+{token}@{bounce domain}`` where the token is lower-case base32 (no
padding) of ``tenant id (16 bytes) + ledger id (8 bytes, big-endian) +
HMAC-SHA256[:6]`` under the purpose ``relay-verp``: 50 characters of local
part (RFC 5321 allows 64), and lower case survives mail systems that fold
the local part's case.

NOTE: this is the one VERP format of the product: the relay (``swiftmail_relay.verp``)
adapts these functions, so its bounce listener accepts what the renderer
writes. The 48-bit MAC is what fits the 64-character local
part beside a full tenant id and ledger id; forging one bounce takes about
2**47 attempts, each a message sent to the relay.

``parse_verp(address, secret_key)`` verifies the signature and returns the
tenant and ledger id (None for 0, which the relay uses for submissions), or
raises ``ValidationError``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import struct
import uuid

from swiftmail_core.crypto import derive_key
from swiftmail_core.errors import ValidationError
from swiftmail_core.tokens import HmacSha256

PURPOSE = "relay-verp"
PREFIX = "b+"
_MAC_BYTES = 6
_PAYLOAD_BYTES = 16 + 8
_INVALID = "not a SwiftMail bounce address"
_U64 = struct.Struct(">Q")
_macs: dict[str, HmacSha256] = {}


@dataclasses.dataclass(frozen=True)
class VerpAddress:
    """The ledger row a bounce address points to (ledger_id None: no row)."""

    tenant_id: uuid.UUID
    ledger_id: int | None


def _mac(secret_key: str, payload: bytes) -> bytes:
    mac = _macs.get(secret_key)
    if mac is None:
        mac = _macs[secret_key] = HmacSha256(derive_key(secret_key, PURPOSE))
    return mac.digest(payload)[:_MAC_BYTES]


def verp_local_part(tenant: bytes, ledger_id: int, secret_key: str) -> str:
    """Return the signed VERP local part from a packed tenant id."""
    if not 0 <= ledger_id < 1 << 64:
        raise ValueError(f"ledger id out of VERP range: {ledger_id}")
    payload = tenant + _U64.pack(ledger_id)
    encoded = base64.b32encode(payload + _mac(secret_key, payload)).decode("ascii")
    return PREFIX + encoded.rstrip("=").lower()


def verp_return_path(
    bounce_domain: str, tenant_id: uuid.UUID, ledger_id: int, secret_key: str
) -> str:
    """Return the envelope sender for one ledger row."""
    return f"{verp_local_part(tenant_id.bytes, ledger_id, secret_key)}@{bounce_domain}"


def parse_verp(address: str, secret_key: str) -> VerpAddress:
    """Verify a VERP bounce address and return its tenant and ledger id."""
    local = address.strip().strip("<>").rpartition("@")[0] if "@" in address else address
    local = local.lower()
    encoded_length = ((_PAYLOAD_BYTES + _MAC_BYTES) * 8 + 4) // 5
    if not local.startswith(PREFIX) or len(local) != len(PREFIX) + encoded_length:
        raise ValidationError.for_field("address", _INVALID)
    encoded = local[len(PREFIX) :].upper()
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError) as ex:
        raise ValidationError.for_field("address", _INVALID) from ex
    payload, mac = raw[:_PAYLOAD_BYTES], raw[_PAYLOAD_BYTES:]
    # APPSEC: constant-time check; a forged bounce cannot suppress an address.
    if len(raw) != _PAYLOAD_BYTES + _MAC_BYTES or not hmac.compare_digest(
        _mac(secret_key, payload), mac
    ):
        raise ValidationError.for_field("address", _INVALID)
    ledger_id = _U64.unpack(payload[16:])[0]
    return VerpAddress(uuid.UUID(bytes=payload[:16]), ledger_id or None)
