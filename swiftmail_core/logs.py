"""Structured logs: JSON lines on stdout, readable on a TTY.

Bind ``tenant_id``, ``request_id`` or ``job_id`` with ``bind_context`` and
every line logged in that context carries them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import structlog.tracebacks

# Libraries that log every SMTP command at INFO: only their warnings, unless debugging.
# NOTE: huey logs every task it runs at INFO: an idle worker wrote 5 lines every tick.
CHATTY_LIBRARIES = ("mail.log", "aiosmtplib", "huey")
#: A JSON line's traceback: ``exception`` is a list of {exc_type, exc_value, frames}.
#: APPSEC: without the frames' local variables (they may hold secrets and addresses).
TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is at the time of writing."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the standard library to write to stdout."""
    numeric = LEVELS.get(level.lower(), logging.INFO)
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exceptions = structlog.processors.format_exc_info if use_console else TRACEBACKS
    structlog.configure(
        processors=[*shared, exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # NOTE: no file argument: each logger resolves sys.stdout when made, so a
        # replaced stdout (daemonising, test capture) never leaves a dead stream.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            # NOTE: a library's logger.exception (huey's "Unhandled exception in
            # task") carries exc_info too; without this the traceback was lost.
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), exceptions],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)


@contextmanager
def bind_context(**values: Any) -> Iterator[None]:
    """Bind values (tenant_id, request_id, job_id) to every log line in the block."""
    tokens = structlog.contextvars.bind_contextvars(
        **{key: str(value) for key, value in values.items() if value is not None}
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
