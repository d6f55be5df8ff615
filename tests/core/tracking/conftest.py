"""Fixtures for tracking tests: a sent campaign message with a link, a hit stream."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import pytest

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.tracking_ingest import HitStream


@dataclasses.dataclass(frozen=True)
class SentMessage:
    """A campaign message already handed over, with one tracked link."""

    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    list_id: uuid.UUID
    message_id: int
    link_id: int
    email: str


def make_sent_message(
    tenant_id: uuid.UUID,
    *,
    url: str = "https://example.com/landing",
    sent_at: datetime.datetime | None = None,
    email: str | None = None,
    campaign_id: uuid.UUID | None = None,
) -> SentMessage:
    """Create list, contact, subscription, campaign, ledger row and link."""
    sent_at = sent_at or datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    contact_id, list_id = uuid.uuid4(), uuid.uuid4()
    new_campaign = campaign_id is None
    campaign_id = campaign_id or uuid.uuid4()
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    with tenant_tx(tenant_id):
        tenant = str(tenant_id)
        app_db.execute_sql(
            "INSERT INTO contacts (tenant_id, id, email) VALUES (%s, %s, %s)",
            (tenant, str(contact_id), email),
        )
        app_db.execute_sql(
            "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, %s)",
            (tenant, str(list_id), f"list-{list_id.hex[:8]}"),
        )
        app_db.execute_sql(
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
            "VALUES (%s, %s, %s, 'confirmed')",
            (tenant, str(list_id), str(contact_id)),
        )
        if new_campaign:
            app_db.execute_sql(
                "INSERT INTO campaigns (tenant_id, id, name, status, list_ids, subject, html, "
                "from_email) VALUES (%s, %s, 'Autumn news', 'sent', %s::uuid[], 'Autumn', "
                "'<p>Hello from the campaign</p>', 'news@sender.test')",
                (tenant, str(campaign_id), [str(list_id)]),
            )
        message_id = app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, status, sent_at) "
            "VALUES (%s, %s, %s, %s, 'delivered', %s) RETURNING id",
            (tenant, str(campaign_id), str(contact_id), email, sent_at),
        ).fetchone()[0]
        link_id = app_db.execute_sql(
            "INSERT INTO links (tenant_id, campaign_id, url) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant_id, campaign_id, url) DO UPDATE SET label = links.label "
            "RETURNING id",
            (tenant, str(campaign_id), url),
        ).fetchone()[0]
    return SentMessage(tenant_id, campaign_id, contact_id, list_id, message_id, link_id, email)


@pytest.fixture
def sent_message(tenant_a) -> SentMessage:  # type: ignore[no-untyped-def]
    """A delivered campaign message of tenant A, sent an hour ago."""
    return make_sent_message(tenant_a.id)


@pytest.fixture
def hit_stream(redis_client, run_id) -> HitStream:  # type: ignore[no-untyped-def]
    """A hit stream private to this test."""
    stream = HitStream(redis_client, name=f"{run_id}:hits:{uuid.uuid4().hex[:8]}")
    stream.ensure_group()
    yield stream
    redis_client.delete(stream.name)


@pytest.fixture(autouse=True)
def _logs_to_current_stdout() -> None:
    """Point structlog at this test's stdout.

    NOTE: ``configure_logging`` binds the stream it is called with; a CLI test
    run earlier in the session can leave it bound to a closed stream.
    """
    from swiftmail_core.logs import configure_logging

    configure_logging("warning", "json")
