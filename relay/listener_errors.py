"""What an SMTP listener answers when something unexpected fails: 451 4.3.0, no internals.

aiosmtpd calls a handler's ``handle_exception`` for any error a command
raised; without one it answers ``500 Error: (OperationalError) ...``, a
permanent-class reply for what is usually a transient fault (a database
restart) that also leaks internals. Both listeners (submission and bounces)
mix this in: the client is told to try again later, the error is logged.
"""

from __future__ import annotations

import structlog

TRANSIENT_FAILURE = "451 4.3.0 Local error in processing, try again later"
log = structlog.get_logger("swiftmail.relay.listener")


class TransientOnError:
    """Answer every unexpected listener error with a transient 451 and log it."""

    async def handle_exception(self, error: Exception) -> str:
        """Log ``error`` with its traceback; tell the client only to retry."""
        log.error("smtp_command_failed", error_type=type(error).__name__, exc_info=error)
        return TRANSIENT_FAILURE
