"""Helpers every resource uses: the principal, lookups that 404, timestamps."""

from __future__ import annotations

import uuid
from typing import Any

import falcon
from peewee import ModelSelect
from swiftmail_web.iri import iri_to_uri
from swiftmail_web.jsonio import parse_uuid

from swiftmail_core.errors import NotFoundError
from swiftmail_core.principal import Principal

UUID = {"type": "string", "format": "uuid"}
TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
OBJECT = {"type": "object"}


def principal(req: falcon.Request) -> Principal:
    """Return the authenticated caller (the middleware guarantees one)."""
    found: Principal = req.context.principal
    return found


def tenant_id(req: falcon.Request) -> uuid.UUID:
    """Return the caller's tenant: from the credential, never from the request."""
    return principal(req).tenant_id


def get_or_404(query: ModelSelect, id_field: Any, raw_id: str, what: str) -> Any:
    """Return the one row of ``query`` with ``id_field == raw_id``, or raise 404.

    APPSEC: another tenant's row is invisible under row-level security, so it
    is "not found" exactly like an id that never existed.
    """
    object_id = parse_uuid(raw_id, what)
    row = query.where(id_field == object_id).first()
    if row is None:
        raise NotFoundError(f"no {what} {raw_id}")
    return row


def created(resp: falcon.Response, body: dict[str, Any], location: str) -> None:
    """Answer 201 with ``body`` and a Location header."""
    resp.status = 201
    resp.media = body
    resp.set_header("Location", iri_to_uri(location))
