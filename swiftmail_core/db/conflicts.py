"""Running a transaction again when the database says "retry": serialization and deadlocks.

On Citus, a statement that meets a tenant's shards while they are being split
(``swiftmail citus isolate-tenant``) fails with ``serialization_failure``
("a concurrent shard split may have moved the data ... Retry the query") or,
planned just before the split, "could not find valid entry for shard"; and
any PostgreSQL transaction can lose a deadlock. Both rolled back entirely, so
a transaction that is safe to repeat (a claim, a state write: guarded by
leases, the transition table and event source keys) says so with
``retry_on_conflict`` and runs again, a few times, after a short pause.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: serialization_failure, deadlock_detected.
RETRY_STATES = frozenset({"40001", "40P01"})
#: Citus 13.2 reports a statement planned against shards a concurrent split
#: just replaced as an internal error (XX000) with this text; it is transient.
TRANSIENT_CITUS_ERRORS = ("could not find valid entry for shard",)
ATTEMPTS = 5
PAUSE_SECONDS = 0.2


def error_chain(ex: BaseException) -> list[BaseException]:
    """Return ``ex`` and every exception it wraps (cause, context, peewee's wrapped one)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [ex]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        # peewee wraps the driver's exception as its first argument.
        todo.extend([current.__cause__, current.__context__,
                     *(a for a in current.args if isinstance(a, BaseException))])
    return seen


def is_conflict(ex: BaseException) -> bool:
    """True when ``ex`` (or what it wraps) asks for the transaction to be retried."""
    for error in error_chain(ex):
        code = getattr(error, "pgcode", None)
        if code in RETRY_STATES or (code == "XX000" and any(
                text in str(error) for text in TRANSIENT_CITUS_ERRORS)):
            return True
    return False


def retry_on_conflict(function: F) -> F:
    """Run ``function`` again (up to ATTEMPTS times) when its transaction must be retried.

    Only for functions that open their own transaction and are safe to repeat.
    """
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except Exception as ex:
                if attempt == ATTEMPTS or not is_conflict(ex):
                    raise
                log.warning("%s must be retried (%s); attempt %d", function.__qualname__,
                            str(ex).strip().splitlines()[0], attempt + 1)
                time.sleep(PAUSE_SECONDS * attempt)
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]
