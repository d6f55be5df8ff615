"""Opaque public ids for rows keyed by a global bigint sequence.

``messages.id``, ``links.id`` and ``webhook_deliveries.id`` come from
sequences shared by every tenant, so showing them would let a tenant measure
another's volume (send, wait, send again, subtract). The API shows instead
``msg_``/``lnk_``/``whd_`` followed by one AES block (base32): the first half
of the tenant's UUID and the bigint, encrypted under a key derived from
``secret_key`` for that kind. The same row always has the same public id,
ids of different tenants are unrelated, and ``decode`` accepts only an id
minted for the caller's tenant and kind (anything else reads as "no such
row", never as another tenant's row).
"""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from swiftmail_core.crypto import derive_key

#: Public prefix of each kind of id.
PREFIXES: Mapping[str, str] = {"message": "msg", "link": "lnk", "webhook_delivery": "whd"}
_MAX = 1 << 64


class PublicIds:
    """Encode and decode the public ids of one install (one ``secret_key``)."""

    def __init__(self, secret_key: str) -> None:
        # NOTE: ECB over exactly one block is a keyed permutation of that block,
        # which is what an opaque, stable, reversible id needs (no IV to carry).
        self._ciphers = {kind: Cipher(algorithms.AES(derive_key(secret_key, f"public-id:{kind}")
                                                     [:16]), modes.ECB())  # noqa: S305
                         for kind in PREFIXES}

    def encode(self, kind: str, tenant_id: uuid.UUID, ident: int) -> str:
        """Return the public id of row ``ident`` of ``tenant_id``."""
        if not 0 <= ident < _MAX:
            raise ValueError(f"{kind} id {ident} is out of range")
        block = tenant_id.bytes[:8] + ident.to_bytes(8, "big")
        encryptor = self._ciphers[kind].encryptor()
        sealed = encryptor.update(block) + encryptor.finalize()
        return f"{PREFIXES[kind]}_{base64.b32encode(sealed).decode().rstrip('=').lower()}"

    def decode(self, kind: str, tenant_id: uuid.UUID, public_id: str) -> int | None:
        """Return the row id behind ``public_id``; None unless minted for this tenant."""
        prefix, _, body = public_id.partition("_")
        if prefix != PREFIXES[kind] or len(body) != 26:
            return None
        try:
            sealed = base64.b32decode(body.upper() + "======")
        except (binascii.Error, ValueError):
            return None
        decryptor = self._ciphers[kind].decryptor()
        block = decryptor.update(sealed) + decryptor.finalize()
        if block[:8] != tenant_id.bytes[:8]:
            return None
        return int.from_bytes(block[8:], "big")

    def decoder(self, kind: str, tenant_id: uuid.UUID) -> Callable[[str], int | None]:
        """Return ``decode`` bound to one kind and tenant (for cursors and path ids)."""
        return functools.partial(self.decode, kind, tenant_id)

    def public_event_payload(self, tenant_id: uuid.UUID, payload: Mapping[str, Any]
                             ) -> dict[str, Any]:
        """Return an event payload with its ``message_id``/``link_id`` made public."""
        shown = dict(payload)
        for field, kind in (("message_id", "message"), ("link_id", "link")):
            value = shown.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                shown[field] = self.encode(kind, tenant_id, value)
        return shown


@functools.lru_cache(maxsize=8)
def public_ids(secret_key: str) -> PublicIds:
    """Return the (cached) ``PublicIds`` of an install."""
    return PublicIds(secret_key)
