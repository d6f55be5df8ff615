"""Built-in tracking sink: every tracking event as one structured log line."""

from __future__ import annotations

import logging

import structlog

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.tracking import TrackingEvent

log = structlog.get_logger("swiftmail.tracking")


@hookimpl
def swiftmail_tracking_event(event: TrackingEvent) -> None:
    """Log the event at debug level with its tenant bound."""
    # NOTE: checked first: the drainer calls this for every hit it stores, and
    # at the usual levels the arguments below were built only to be dropped.
    if not log.is_enabled_for(logging.DEBUG):
        return
    log.debug(
        "tracking_event",
        tenant_id=str(event.tenant_id),
        type=event.type,
        message_id=event.message_id,
        campaign_id=str(event.campaign_id) if event.campaign_id else None,
        is_machine=event.is_machine,
    )
