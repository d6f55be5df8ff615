"""Statistics read from a real streaming standby (``analytics_database_url``), the primary as fallback.

A primary and a synchronous streaming standby (``pg_basebackup -R``),
SwiftMail initialised on the primary, ``analytics_database_url`` naming the
standby. An event written on the primary shows in the campaign's statistics
read on the standby once the standby has replayed it; measured (printed,
never asserted): seconds from the commit to the standby showing it. With
the standby down the same read goes to the primary.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid

from swiftmail_core import analytics, db
from swiftmail_core.db import analytics_tx
from swiftmail_core.db.targets import database_targets
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.settings import load_settings
from tests.core.tracking.conftest import make_sent_message
from tests.ha.conftest import install, measure

VISIBLE_WITHIN = 30.0


def _delivered(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> tuple[int, bool]:
    """Return the campaign's delivered count and whether it was read on a standby."""
    with analytics_tx(tenant_id) as database:
        standby = bool(database.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0])
        return analytics.campaign_summary(campaign_id)["delivered"], standby


def test_statistics_read_from_the_standby_and_from_the_primary_without_it(
        postgres_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.tenants import create_tenant

    environ = install(postgres_pair.url("swiftmail_ha"),
                      postgres_pair.url("postgres", user="postgres"), tmp_path)
    postgres_pair.start_standby()
    standby = f"postgresql://127.0.0.1:{postgres_pair.ports['standby']}/swiftmail_ha"
    settings = load_settings(environ={**environ, "SWIFTMAIL_ANALYTICS_DATABASE_URL": standby})
    db.connect(database_targets(settings), pool_size=4,
               failover_wait_seconds=settings.db_failover_wait_seconds)
    try:
        tenant = create_tenant(f"ha-analytics-{os.getpid()}")
        sent = make_sent_message(tenant.id)
        record_events([EventRecord(
            tenant.id, "delivered", datetime.datetime.now(datetime.UTC),
            message_id=sent.message_id, campaign_id=sent.campaign_id,
            contact_id=sent.contact_id, email=sent.email, source_key=str(uuid.uuid4()))])
        committed = time.monotonic()
        deadline = committed + VISIBLE_WITHIN
        while True:
            delivered, on_standby = _delivered(tenant.id, sent.campaign_id)
            assert on_standby  # read on the replica, not the primary
            if delivered == 1:
                break
            assert time.monotonic() < deadline, "the standby never showed the event"
            time.sleep(0.01)
        measure("analytics_replica", commit_to_visible_seconds=round(
            time.monotonic() - committed, 3))

        postgres_pair.crash("standby")
        assert _delivered(tenant.id, sent.campaign_id) == (1, False)  # the primary answers
    finally:
        db.disconnect()
