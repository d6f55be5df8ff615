"""The built-in tracking log sink: a debug line per event, nothing at the usual levels."""

from __future__ import annotations

import datetime
import json
import uuid

from swiftmail_plugins import log_tracking

from swiftmail_core.logs import configure_logging
from swiftmail_core.tracking import TrackingEvent

EVENT = TrackingEvent(
    tenant_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
    type="opened",
    occurred_at=datetime.datetime(2026, 12, 7, 16, 0, tzinfo=datetime.UTC),
    message_id=42,
    campaign_id=uuid.UUID("00000000-0000-4000-8000-000000000002"),
)


def test_logs_each_event_at_debug(capsys) -> None:
    configure_logging("debug", "json")
    try:
        log_tracking.swiftmail_tracking_event(EVENT)
    finally:
        configure_logging("info", "json")  # the later tests' libraries stay quiet
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["event"] == "tracking_event"
    assert line["tenant_id"] == str(EVENT.tenant_id)
    assert line["campaign_id"] == str(EVENT.campaign_id)
    assert line["message_id"] == 42 and line["type"] == "opened"


def test_writes_nothing_at_info(capsys) -> None:
    configure_logging("info", "json")
    log_tracking.swiftmail_tracking_event(EVENT)
    assert capsys.readouterr().out == ""
