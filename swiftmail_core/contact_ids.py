"""Contact ids: time-ordered UUIDs (RFC 9562 version 7), one at a time or an import's worth.

A contact's id starts with the millisecond it was created, so contacts
created together have neighbouring ids: the primary key, the subscriptions'
keys and the foreign-key checks append near the end of their indexes instead
of touching random pages, and a range of ids (an audience's batch) lies on
neighbouring heap pages of ``contacts`` and ``subscriptions`` instead of on
most of them. The id tells its holder when the contact was created, which the
API's ``created_at`` already says to the tenant. An id is a name, never a
credential: the tenant's API reads only its own rows (row-level security) and
the public pages take signed tokens (``tokens``), so the ids of one import
(one random base, then the row's place) being neighbours gives nothing away.
"""

from __future__ import annotations

import secrets
import time
import uuid

#: An import's ids in SQL: UUIDv7 layout (48-bit Unix ms, version 7, the
#: row's place ``n`` in the import's sort order, variant, 32 random bits drawn
#: once per import), so one file's contacts get increasing ids in its order
#: (a large file merged in parts: each part's, a part's range after the last's;
#: ``imports.contacts.Part``). The two %s are the bases from
#: ``ordered_uuid_bases()``; ``n`` is a bigint.
ORDERED_UUID_SQL = (
    "encode(int8send(%s::bigint | ((n >> 30) & 4095))"
    " || int8send(%s::bigint | ((n & 1073741823) << 32)), 'hex')::uuid"
)


def ordered_uuid_bases() -> tuple[int, int]:
    """Return the signed 64-bit halves ORDERED_UUID_SQL adds a row number to."""
    high = (int(time.time() * 1000) << 16) | 0x7000
    low = -(1 << 63) | secrets.randbits(32)  # variant bits 10, then zeros, then random
    return high, low


def new_contact_id() -> uuid.UUID:
    """Return one new contact's id: UUIDv7, the current millisecond then 74 random bits."""
    milliseconds = time.time_ns() // 1_000_000
    random_a, random_b = secrets.randbits(12), secrets.randbits(62)
    value = (milliseconds << 80) | (0x7 << 76) | (random_a << 64) | (0b10 << 62) | random_b
    return uuid.UUID(int=value)
