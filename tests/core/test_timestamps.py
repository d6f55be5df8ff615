"""Every timestamp SwiftMail shows is RFC 3339 in UTC with a Z (never +00:00)."""

from __future__ import annotations

import datetime
import re
import uuid

from swiftmail_core.timestamps import rfc3339
from swiftmail_core.tracking import TrackingEvent
from swiftmail_core.webhooks.queue import event_payload

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_rfc3339_is_utc_with_z() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert rfc3339(datetime.datetime(2030, 1, 1, 10, 0, tzinfo=paris)) == "2030-01-01T09:00:00Z"
    assert rfc3339(datetime.datetime(2030, 1, 1, 9, 0)) == "2030-01-01T09:00:00Z"


def test_webhook_payloads_use_z() -> None:
    # Regression: webhook payloads said +00:00 while the API said Z.
    event = TrackingEvent(
        tenant_id=uuid.uuid4(), type="opened",
        occurred_at=datetime.datetime(2030, 1, 1, 9, 0, tzinfo=datetime.UTC),
        email="a@example.com")
    assert Z_TIME.match(event_payload(event)["occurred_at"])
