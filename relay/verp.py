"""VERP return paths for mail the relay generates or relays.

One wire format serves the whole product and lives in core
(``swiftmail_core.rendering.verp``): ``b+TOKEN@domain`` where TOKEN carries
the tenant, the ledger row (0 when there is none, as for SMTP submissions)
and a truncated HMAC. This module adapts it to the relay's calling style.
"""

from __future__ import annotations

import uuid

from swiftmail_core.errors import ValidationError
from swiftmail_core.rendering.verp import parse_verp, verp_return_path


def encode(secret_key: str, tenant_id: uuid.UUID | str, ledger_id: int | None, domain: str) -> str:
    """Return the VERP address for a message."""
    return verp_return_path(domain, uuid.UUID(str(tenant_id)), ledger_id or 0, secret_key)


def decode(secret_key: str, address: str) -> tuple[uuid.UUID, int | None] | None:
    """Return (tenant_id, ledger_id or None) for a genuine VERP address, else None."""
    try:
        parsed = parse_verp(address, secret_key)
    except ValidationError:
        return None
    return parsed.tenant_id, parsed.ledger_id
