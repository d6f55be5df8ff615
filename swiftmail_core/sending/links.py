"""A campaign's tracked links: registered before anything renders them.

The renderer signs each tracked link's id into its click URL, so every link
of the HTML a message is rendered from must have a ``links`` row first: when
the campaign starts, and for a test send of a draft (whose links are not
registered yet). Registering is idempotent (one row per campaign and URL).
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
