"""Count and select a segment's contacts (call inside ``tenant_tx``)."""

from __future__ import annotations

import uuid
from typing import Any

from peewee import SQL, ModelSelect

from swiftmail_core.models import Contact
from swiftmail_core.segments.compiler import compile_segment
from swiftmail_core.segments.definition import parse_definition

#: How peewee names the contacts table in ``Contact.select()``.
PEEWEE_ALIAS = "t1"


def matching_contacts(tenant_id: uuid.UUID, definition: Any) -> ModelSelect:
    """Return a query of the tenant's contacts that match ``definition``."""
    compiled = compile_segment(tenant_id, parse_definition(definition), alias=PEEWEE_ALIAS)
    return Contact.select().where(SQL(compiled.sql, compiled.params))


def count_matching(tenant_id: uuid.UUID, definition: Any) -> int:
    """Return how many of the tenant's contacts match ``definition``."""
    return int(matching_contacts(tenant_id, definition).count())
