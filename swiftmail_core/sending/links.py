"""Tracked links of a campaign or a journey: registered before anything renders them.

The renderer signs each tracked link's id into its click URL, so every link
of the HTML a message is rendered from must have a ``links`` row first: when
the campaign starts, and for a test send of a draft (whose links are not
registered yet); a journey's when its step queues the email. Registering
is idempotent (one row per campaign, or journey, and URL).
"""

from __future__ import annotations

import uuid
from typing import Any

from swiftmail_core.rendering import links_in


def register_links(database: Any, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                   html: str) -> None:
    """Insert a row for every link of ``html`` (inside the caller's ``tenant_tx``)."""
    for url in dict.fromkeys(links_in(html or "")):
        database.execute_sql(
            "INSERT INTO links (tenant_id, campaign_id, url) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant_id, campaign_id, url) DO NOTHING",
            (str(tenant_id), str(campaign_id), url),
        )


def register_journey_links(database: Any, tenant_id: uuid.UUID | str, journey_id: str,
                           html: str) -> None:
    """Insert a row for every link of a journey email's ``html`` not registered yet.

    NOTE: read first, insert only what is missing: after a journey's first
    email its links exist, and enrollments run in parallel never queue up
    behind each other's uncommitted insert of the same URL.
    """
    urls = list(dict.fromkeys(links_in(html or "")))
    if not urls:
        return
    known = {url for (url,) in database.execute_sql(
        "SELECT url FROM links WHERE tenant_id = %s AND journey_id = %s AND url = ANY (%s)",
        (str(tenant_id), journey_id, urls))}
    missing = [url for url in urls if url not in known]
    if missing:
        database.execute_sql(
            "INSERT INTO links (tenant_id, journey_id, url) SELECT %s, %s, url "
            "FROM unnest(%s::text[]) AS url "
            "ON CONFLICT (tenant_id, journey_id, url) WHERE journey_id IS NOT NULL DO NOTHING",
            (str(tenant_id), journey_id, missing))
