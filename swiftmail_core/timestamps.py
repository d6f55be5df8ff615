"""One way to write a moment in time: RFC 3339, UTC, with a ``Z``.

Every timestamp SwiftMail shows (API bodies, webhook payloads, job results,
exports, CLI listings) goes through ``rfc3339`` so clients never see
``+00:00`` in one place and ``Z`` in another.
"""

from __future__ import annotations

import datetime


def rfc3339(value: datetime.datetime) -> str:
    """Return ``value`` in UTC as RFC 3339 with a ``Z`` suffix (a naive value is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
