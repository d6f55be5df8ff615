"""A transaction the database asks to retry runs again; any other error is raised at once."""

from __future__ import annotations

import peewee
import pytest

from swiftmail_core.db import system_tx
from swiftmail_core.db.conflicts import retry_on_conflict

_RAISE = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{code}'; END $$"


def test_a_serialization_failure_or_deadlock_runs_the_transaction_again(runtime) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @retry_on_conflict
    def transaction() -> int:
        calls.append(1)
        with system_tx() as database:
            if len(calls) == 1:
                database.execute_sql(_RAISE.format(code="serialization_failure"))
            if len(calls) == 2:
                database.execute_sql(_RAISE.format(code="deadlock_detected"))
            if len(calls) == 3:  # what Citus says when a split replaced the planned shard
                database.execute_sql(
                    "DO $$ BEGIN RAISE EXCEPTION 'could not find valid entry for shard 102148' "
                    "USING ERRCODE = 'internal_error'; END $$")
            return int(database.execute_sql("SELECT 42").fetchone()[0])

    assert transaction() == 42
    assert len(calls) == 4


def test_other_errors_are_not_retried(runtime) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @retry_on_conflict
    def transaction() -> None:
        calls.append(1)
        with system_tx() as database:
            database.execute_sql("SELECT 1 / 0")

    with pytest.raises(peewee.DataError):
        transaction()
    assert len(calls) == 1
