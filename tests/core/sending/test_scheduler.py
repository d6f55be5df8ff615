"""The scheduler runs once per tick cluster-wide; paused work leaves the due set; a
failing transport pauses its campaign; event partitions are kept ahead."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import lifecycle, outbox, sweeper
from swiftmail_core.sending.worker import SendingWorker
from tests.core.sending.conftest import add_subscribers, make_campaign, make_list


def _sending_campaign(tenant_id, count: int = 3, **fields) -> uuid.UUID:  # type: ignore[no-untyped-def]
    list_id = make_list(tenant_id)
    add_subscribers(tenant_id, list_id, count, domain=f"{uuid.uuid4().hex[:6]}.test")
    campaign_id = make_campaign(tenant_id, [list_id], **fields)
    with tenant_tx(tenant_id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                             (str(campaign_id),))
    from swiftmail_core.sending.audience import resolve_audience

    resolve_audience(tenant_id, campaign_id)
    return campaign_id


def _statuses(tenant_id, campaign_id) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
            (str(campaign_id),)).fetchall())


def _campaign(tenant_id, campaign_id) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return database.execute_sql("SELECT status, paused_reason FROM campaigns WHERE id = %s",
                                    (str(campaign_id),)).fetchone()


@pytest.fixture
def fresh_scheduler():  # type: ignore[no-untyped-def]
    with system_tx() as database:
        database.execute_sql("UPDATE scheduler_ticks SET ticked_at = '-infinity', "
                             "lease_until = NULL WHERE name = 'sending'")
    yield


def test_two_workers_ticking_together_run_the_scheduler_once(settings, runtime, fresh_scheduler,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: every worker process ran the periodic work on every tick.
    runs: list[str] = []

    def slow_tick(settings, plugins):  # type: ignore[no-untyped-def]
        runs.append(threading.current_thread().name)
        time.sleep(0.3)
        return {}

    monkeypatch.setattr(sweeper, "tick", slow_tick)
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(
        sweeper.run_scheduled_tick(settings, runtime.plugins, owner=f"w{n}")), name=f"w{n}")
        for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1 and sum(r is not None for r in results) == 1
    # within the same tick interval nobody runs it again
    assert sweeper.run_scheduled_tick(settings, runtime.plugins, owner="w9") is None


def test_a_paused_campaign_leaves_the_due_set_and_resumes(tenant_a, runtime) -> None:  # type: ignore[no-untyped-def]
    # Regression: a paused campaign's rows stayed due, so claims walked them and
    # has_due_work kept waking workers for nothing.
    campaign_id = _sending_campaign(tenant_a.id)
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    assert _statuses(tenant_a.id, campaign_id) == {"held": 3}
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    assert _statuses(tenant_a.id, campaign_id) == {"queued": 3}


def test_a_claim_parks_rows_of_a_campaign_that_stopped_sending(tenant_a, runtime) -> None:  # type: ignore[no-untyped-def]
    paused, cancelled = _sending_campaign(tenant_a.id), _sending_campaign(tenant_a.id)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'paused' WHERE id = %s", (str(paused),))
        database.execute_sql("UPDATE campaigns SET status = 'cancelled' WHERE id = %s",
                             (str(cancelled),))
    for _ in range(20):
        claimed = outbox.claim_batch(limit=1000)
        outbox.release(claimed)
        if not _statuses(tenant_a.id, paused).get("queued"):
            break
    assert _statuses(tenant_a.id, paused) == {"held": 3}
    assert _statuses(tenant_a.id, cancelled) == {"cancelled": 3}


def test_rows_reclaimed_after_a_cancel_end_cancelled(tenant_a, runtime) -> None:  # type: ignore[no-untyped-def]
    # Regression: a row leased when its campaign was cancelled went back to queued
    # after its lease expired, and stayed queued forever.
    campaign_id = _sending_campaign(tenant_a.id, count=1)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE messages SET status = 'sending', lease_owner = 'gone', "
                             "lease_expires_at = now() - interval '1 minute' "
                             "WHERE campaign_id = %s", (str(campaign_id),))
    lifecycle.cancel_campaign(tenant_a.id, campaign_id)
    sweeper.reclaim_expired_leases()
    assert _statuses(tenant_a.id, campaign_id) == {"cancelled": 1}


class _Broken:
    name = "broken-transport"

    def send(self, messages):  # type: ignore[no-untyped-def]
        raise OSError("connection refused by the provider")

    def close(self) -> None:
        pass


class _BrokenPlugin:
    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return [_Broken()]


def _worker(settings, threshold: int = 2) -> SendingWorker:  # type: ignore[no-untyped-def]
    import dataclasses

    local = dataclasses.replace(settings, send_pause_after_failures=threshold)
    plugins = PluginManager.load(local)
    plugins.pm.register(_BrokenPlugin())
    return SendingWorker(local, plugins)


def _run_until_claimed(worker: SendingWorker, tenant_id, campaign_id, rounds: int = 30) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        worker.process_batch(limit=1000)
        if _campaign(tenant_id, campaign_id)[0] == "paused":
            return
        with tenant_tx(tenant_id) as database:  # retry at once instead of after the backoff
            database.execute_sql("UPDATE messages SET next_attempt_at = now() "
                                 "WHERE campaign_id = %s AND status = 'deferred'",
                                 (str(campaign_id),))


def test_a_transport_that_cannot_be_loaded_pauses_its_campaign_with_a_reason(settings, tenant_a,
                                                                            runtime) -> None:  # type: ignore[no-untyped-def]
    # Regression: the rows were released every 60 s forever, silently.
    campaign_id = _sending_campaign(tenant_a.id, transport="carrier-pigeon")
    _run_until_claimed(_worker(settings), tenant_a.id, campaign_id)
    status, reason = _campaign(tenant_a.id, campaign_id)
    assert status == "paused" and "carrier-pigeon" in reason and "cannot be loaded" in reason
    assert _statuses(tenant_a.id, campaign_id) == {"held": 3}
    with tenant_tx(tenant_a.id) as database:
        assert database.execute_sql("SELECT count(*) FROM events WHERE campaign_id = %s AND "
                                    "type = 'campaign_paused'", (str(campaign_id),)).fetchone()[0] == 1
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    assert _campaign(tenant_a.id, campaign_id) == ("sending", None)


def test_a_transport_that_keeps_failing_pauses_after_n_batches(settings, tenant_a, runtime) -> None:  # type: ignore[no-untyped-def]
    campaign_id = _sending_campaign(tenant_a.id, transport="broken-transport")
    _run_until_claimed(_worker(settings, threshold=3), tenant_a.id, campaign_id)
    status, reason = _campaign(tenant_a.id, campaign_id)
    assert status == "paused" and "connection refused" in reason


def test_event_partitions_are_created_ahead_and_stranded_rows_move(tenant_a, runtime,
                                                                    owner_connection) -> None:  # type: ignore[no-untyped-def]
    # Regression: only `swiftmail migrate` made partitions; months later events landed in
    # events_default and creating that month's partition failed.
    far = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)).replace(day=15)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("INSERT INTO events (tenant_id, type, occurred_at, source_key) "
                             "VALUES (%s, 'opened', %s, %s)",
                             (str(tenant_a.id), far, f"far:{uuid.uuid4()}"))
    name = f"events_{far:%Y_%m}"
    with owner_connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_default WHERE tenant_id = %s",
                       (str(tenant_a.id),))
        assert cursor.fetchone()[0] == 1
    assert sweeper.maintain_event_partitions() >= 1
    with owner_connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {name} WHERE tenant_id = %s", (str(tenant_a.id),))
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM events_default WHERE tenant_id = %s",
                       (str(tenant_a.id),))
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = "
                       "'swiftmail_ensure_event_partitions'")
        assert cursor.fetchone()[0] == ["search_path=public, pg_temp"]
