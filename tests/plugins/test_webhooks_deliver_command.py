"""`swiftmail webhooks deliver` outlives a database failover."""

from __future__ import annotations

import types

import psycopg2
from click.testing import CliRunner
from swiftmail_plugins.tracking import webhooks_group


def test_the_deliverer_carries_on_when_a_round_loses_the_database(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.webhooks.dispatcher import Dispatcher

    rounds: list[int] = []

    def deliver_due(self, limit: int = 500) -> int:  # type: ignore[no-untyped-def]
        rounds.append(1)
        if len(rounds) == 1:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        raise KeyboardInterrupt  # the operator stops it

    monkeypatch.setattr(Dispatcher, "deliver_due", deliver_due)
    state = types.SimpleNamespace(runtime=lambda kind: runtime)
    result = CliRunner().invoke(webhooks_group, ["deliver", "--interval", "0"], obj=state)
    assert len(rounds) == 2, result.output
    assert not isinstance(result.exception, psycopg2.Error)
