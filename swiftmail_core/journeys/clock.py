"""When a ``wait until`` step ends: the next weekday and time in a time zone."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from swiftmail_core.journeys.definition import WEEKDAYS


def zone(name: Any) -> datetime.tzinfo:
    """Return the IANA zone ``name``, or UTC when it is missing or unknown."""
    if isinstance(name, str) and name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.UTC


def next_time(now: datetime.datetime, until: dict[str, Any],
              tz: datetime.tzinfo) -> datetime.datetime:
    """Return the first moment after ``now`` at ``until['time']`` on one of its weekdays."""
    hour, minute = (int(part) for part in until["time"].split(":"))
    days = {WEEKDAYS.index(day) for day in until["weekdays"]}
    local = now.astimezone(tz)
    for offset in range(8):
        day = local.date() + datetime.timedelta(days=offset)
        wall = datetime.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        # NOTE: a wall time a DST change skips or repeats is read as PostgreSQL
        # reads it (sending.send_time): the later of its two readings.
        candidate = max(wall.replace(fold=0).astimezone(datetime.UTC),
                        wall.replace(fold=1).astimezone(datetime.UTC))
        if wall.weekday() in days and candidate > now:
            return candidate
    raise AssertionError("a week always holds one of the weekdays")
