"""Draining hits into events: exactly once, flagged, rolled up, unique counts."""

from __future__ import annotations

import datetime

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.tracking_ingest import Hit
from swiftmail_core.tracking_ingest.drainer import Drainer

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"


def rollups(tenant_id) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT metric, dimension, sum(value) FROM campaign_rollups GROUP BY 1, 2"
        ).fetchall()
    return {(metric, dimension): int(value) for metric, dimension, value in rows}


def events(tenant_id) -> list[tuple]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return app_db.execute_sql(
            "SELECT type, is_machine, link_id, detail->>'machine_reason' FROM events "
            "ORDER BY occurred_at, id"
        ).fetchall()


def test_hits_become_events_with_unique_counts(sent_message, hit_stream) -> None:
    m = sent_message
    person = {"ip": "203.0.113.7", "user_agent": IPHONE}
    hit_stream.add(Hit("open", m.tenant_id, m.message_id, ip="17.1.2.3", user_agent="Mozilla/5.0"))
    hit_stream.add(Hit("open", m.tenant_id, m.message_id, **person))
    hit_stream.add(Hit("open", m.tenant_id, m.message_id, **person))
    hit_stream.add(Hit("click", m.tenant_id, m.message_id, link_id=m.link_id, **person))
    hit_stream.add(Hit("click", m.tenant_id, m.message_id, link_id=m.link_id, **person))
    drainer = Drainer(hit_stream, "test-consumer", block_ms=10)
    assert drainer.drain_once() == 5
    assert drainer.drain_once() == 0
    assert hit_stream.backlog() == 0
    stored = events(m.tenant_id)
    assert [(kind, machine) for kind, machine, _, _ in stored] == [
        ("opened", True), ("opened", False), ("opened", False), ("clicked", False),
        ("clicked", False),
    ]
    assert stored[0][3] == "privacy_proxy"
    counts = rollups(m.tenant_id)
    assert counts[("opened.human", "")] == 2
    assert counts[("opened.machine", "")] == 1
    assert counts[("opened.unique.human", "")] == 1
    assert counts[("opened.unique.machine", "")] == 1
    assert counts[("clicked.human", f"link:{m.link_id}")] == 2
    assert counts[("clicked.unique.human", "")] == 1
    assert counts[("clicked.unique.human", f"link:{m.link_id}")] == 1


def test_scanner_click_right_after_delivery_is_machine(tenant_a, hit_stream) -> None:
    from tests.core.tracking.conftest import make_sent_message

    now = datetime.datetime.now(datetime.UTC)
    m = make_sent_message(tenant_a.id, sent_at=now - datetime.timedelta(seconds=2))
    hit_stream.add(Hit("click", m.tenant_id, m.message_id, link_id=m.link_id,
                       ip="198.51.100.1", user_agent=IPHONE))
    Drainer(hit_stream, "c", block_ms=10).drain_once()
    assert events(m.tenant_id) == [("clicked", True, m.link_id, "too_fast")]
    assert rollups(m.tenant_id)[("clicked.machine", "")] == 1


def test_unacknowledged_batch_is_redelivered_and_counted_once(sent_message, hit_stream) -> None:
    m = sent_message
    for _ in range(3):
        hit_stream.add(Hit("open", m.tenant_id, m.message_id, ip="203.0.113.7",
                           user_agent=IPHONE))
    # A drainer that committed but died before XACK: simulate by committing
    # the batch and "forgetting" to acknowledge.
    drainer = Drainer(hit_stream, "crashy", block_ms=10)
    original = hit_stream.acknowledge
    hit_stream.acknowledge = lambda ids: None  # type: ignore[method-assign]
    drainer.drain_once()
    hit_stream.acknowledge = original  # type: ignore[method-assign]
    # Restarted under the same consumer name, it re-reads its pending entries.
    restarted = Drainer(hit_stream, "crashy", block_ms=10)
    assert restarted.drain_once() == 3
    assert hit_stream.backlog() == 0
    assert len(events(m.tenant_id)) == 3
    assert rollups(m.tenant_id)[("opened.human", "")] == 3


def test_another_consumer_takes_over_abandoned_entries(sent_message, hit_stream) -> None:
    m = sent_message
    hit_stream.add(Hit("open", m.tenant_id, m.message_id, ip="203.0.113.7", user_agent=IPHONE))
    hit_stream.read_new("dead-consumer", 10, 10)  # read, never acknowledged
    survivor = Drainer(hit_stream, "survivor", block_ms=10, reclaim_idle_ms=0)
    survivor._recovered = True
    assert survivor.drain_once() == 1
    assert len(events(m.tenant_id)) == 1
