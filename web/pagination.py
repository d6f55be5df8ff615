"""Cursor pagination: ``limit`` 1..100, ``starting_after`` / ``ending_before``.

Lists are ordered by (created_at, id), oldest first, a total and stable
order. A cursor is an object id; an id the tenant cannot see is refused as
an invalid cursor, exactly like an id that never existed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import falcon
from peewee import Field as PeeweeField
from peewee import ModelSelect, Tuple, UUIDField

from swiftmail_core.errors import ValidationError
from swiftmail_core.public_ids import PublicIds

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

PARAMETERS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
    {"name": "starting_after", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "ending_before", "in": "query", "required": False, "schema": {"type": "string"}},
]


def public_cursor(ids: PublicIds, kind: str, tenant_id: uuid.UUID) -> Callable[[str], int]:
    """Return a cursor parser for public ids of ``kind`` (ValueError unless the tenant's)."""
    def parse(value: str) -> int:
        ident = ids.decode(kind, tenant_id, value)
        if ident is None:
            raise ValueError("not an id of this tenant")
        return ident
    return parse


def page_limit(req: falcon.Request) -> int:
    """Return the ``limit`` query parameter, checked."""
    raw = req.get_param("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError.for_field("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def paginate(
    req: falcon.Request,
    query: ModelSelect,
    order: PeeweeField,
    key: PeeweeField,
    serialize: Callable[[Any], dict[str, Any]],
    *,
    cursor_value: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Return one page of ``query`` as ``{"data": [...], "has_more": bool}``.

    Must run inside the request's tenant transaction.
    """
    limit = page_limit(req)
    after = req.get_param("starting_after")
    before = req.get_param("ending_before")
    if after and before:
        raise ValidationError.for_field(
            "ending_before", "use either starting_after or ending_before, not both")
    cursor_name = "starting_after" if after else "ending_before"
    cursor = after or before
    backwards = False
    if cursor:
        if cursor_value is None:
            cursor_value = uuid.UUID if isinstance(key, UUIDField) else str
        try:
            cursor_key = cursor_value(cursor)
            row = query.where(key == cursor_key).first()
        except (ValueError, TypeError):
            row = None
        if row is None:
            raise ValidationError.for_field(cursor_name, f"no object with id {cursor!r}")
        anchor = getattr(row, order.name)
        position = Tuple(order, key)
        if after:
            query = query.where(position > Tuple(anchor, cursor_key))
        else:
            query = query.where(position < Tuple(anchor, cursor_key))
            backwards = True
    if backwards:
        rows = list(query.order_by(order.desc(), key.desc()).limit(limit + 1))
    else:
        rows = list(query.order_by(order, key).limit(limit + 1))
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return {"object": "list", "data": [serialize(row) for row in rows], "has_more": has_more}
