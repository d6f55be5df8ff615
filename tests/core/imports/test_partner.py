"""A large contacts import merges on two connections and still commits as one."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from swiftmail_core import jobs
from swiftmail_core.imports import contacts as contact_import
from swiftmail_core.imports import partner as partner_module
from swiftmail_core.imports.service import import_file
from tests.core.imports.conftest import contacts_of, subscribers_of

EXISTING = "".join(f"user{i}@example.com,Stored {i},old\n" for i in range(0, 300, 3))
FILE = (
    "".join(f"User{i}@Example.com,Person {i},{'new' if i % 2 else ''}\n" for i in range(300))
    + "".join(f"user{i}@example.com,Again {i},later\n" for i in range(0, 300, 7))
    + "broken.example.com,Nobody,x\n"
)


@pytest.fixture
def started_partners(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Merge every import in parts; return the partners started (the fixture's list)."""
    started: list[Any] = []
    original = partner_module.MergePartner.start

    def start(self: Any) -> None:
        started.append(self)
        original(self)

    monkeypatch.setattr(partner_module.MergePartner, "start", start)
    monkeypatch.setattr(contact_import, "PARTNER_MIN_BYTES", 0)
    return started


def _import(runtime: Any, tenant_id: uuid.UUID, path: Any, list_id: uuid.UUID) -> jobs.JobRow:
    return import_file(runtime, tenant_id, "import_contacts", path, {"list": str(list_id)})


def _in_part(app_dsn: str, index: int, count: int = 200) -> list[str]:
    """Return addresses whose merge falls to part ``index`` of two."""
    connection = psycopg2.connect(app_dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT e FROM (SELECT 'p' || g || '@example.com' AS e"
                f" FROM generate_series(1, {count}) g) s"
                f" WHERE {contact_import.Part(index, 2).where('e')} ORDER BY e")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def test_a_large_import_merges_in_two_parts_with_the_same_result(
    runtime, tenant_a, tenant_b, make_list, write_csv, started_partners
) -> None:
    lists = {tenant.id: make_list(tenant.id) for tenant in (tenant_a, tenant_b)}
    existing = write_csv("email,name,plan\n" + EXISTING, name="existing.csv")
    path = write_csv("email,name,plan\n" + FILE, name="file.csv")
    contact_import.PARTNER_MIN_BYTES = 1 << 40  # one part
    for tenant in (tenant_a, tenant_b):
        _import(runtime, tenant.id, existing, lists[tenant.id])
    single_job = _import(runtime, tenant_b.id, path, lists[tenant_b.id])
    single = (contacts_of(tenant_b.id), subscribers_of(tenant_b.id, lists[tenant_b.id]))
    assert not started_partners

    contact_import.PARTNER_MIN_BYTES = 0
    parted_job = _import(runtime, tenant_a.id, path, lists[tenant_a.id])

    assert len(started_partners) == 1
    assert parted_job.status == "succeeded", parted_job.error
    keys = ("created", "updated", "unchanged", "duplicates", "subscribed")
    assert {key: parted_job.result[key] for key in keys} == \
        {key: single_job.result[key] for key in keys}
    assert (parted_job.rows_ok, parted_job.rows_failed) == (single_job.rows_ok, 1)
    assert parted_job.result["updated"] > 0 and parted_job.result["created"] > 0
    assert (contacts_of(tenant_a.id), subscribers_of(tenant_a.id, lists[tenant_a.id])) == single


def test_a_failing_partner_rolls_the_whole_import_back(
    runtime, tenant_a, make_list, write_csv, started_partners, monkeypatch
) -> None:
    list_id = make_list(tenant_a.id)
    original = contact_import._merge_part

    def merge_then_fail(*args: Any) -> Any:
        original(*args)
        raise RuntimeError("the partner broke after merging")

    monkeypatch.setattr(contact_import, "_merge_part", merge_then_fail)
    with pytest.raises(partner_module.PartnerFailed, match="the partner broke"):
        _import(runtime, tenant_a.id, write_csv("email,name,plan\n" + FILE), list_id)
    assert started_partners
    assert contacts_of(tenant_a.id) == {}
    assert subscribers_of(tenant_a.id, list_id) == {}


def test_a_caller_failing_after_the_merge_rolls_the_partner_back(
    runtime, tenant_a, make_list, write_csv, started_partners, monkeypatch
) -> None:
    list_id = make_list(tenant_a.id)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("could not record the job")

    monkeypatch.setattr(jobs, "finish_job", refuse)
    with pytest.raises(RuntimeError, match="could not record the job"):
        _import(runtime, tenant_a.id, write_csv("email,name,plan\n" + FILE), list_id)
    assert started_partners
    assert contacts_of(tenant_a.id) == {}
    assert subscribers_of(tenant_a.id, list_id) == {}


def test_a_bad_file_stops_the_partner_too(
    runtime, tenant_a, write_csv, started_partners
) -> None:
    from swiftmail_core.errors import ValidationError
    from swiftmail_core.imports.limits import ImportLimits

    rows = "email\n" + "".join(f"row{i}@example.com\n" for i in range(20_000))
    with pytest.raises(ValidationError, match="rows"):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv(rows), {},
                    limits=ImportLimits(max_rows=15_000))
    assert started_partners
    assert contacts_of(tenant_a.id) == {}


def _waiting(monitor: Any, sql: str, parameters: tuple[Any, ...], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with monitor.cursor() as cursor:
            cursor.execute(sql, parameters)
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing came to wait: {sql}")


def test_a_deadlock_through_both_parts_is_broken_by_postgresql(
    runtime, tenant_a, write_csv, targets, started_partners
) -> None:
    # The two parts wait for each other only through PostgreSQL's locks. Here a
    # third transaction holds a row the partner must update and then asks for one
    # the caller has updated: partner -> other -> caller -> partner. PostgreSQL
    # breaks the cycle; a wait on a Python event would leave all three hanging.
    first, second = _in_part(targets.dsn("app"), 0)[0], _in_part(targets.dsn("app"), 1)[0]
    contact_import.PARTNER_MIN_BYTES = 1 << 40  # the setup import: one part
    import_file(runtime, tenant_a.id, "import_contacts",
                write_csv(f"email,name\n{first},Old\n{second},Old\n", name="setup.csv"), {})
    contact_import.PARTNER_MIN_BYTES = 0
    tenant = str(tenant_a.id)
    other = psycopg2.connect(targets.dsn("app"))
    monitor = psycopg2.connect(targets.dsn("app"))
    monitor.autocommit = True
    outcome: dict[str, Any] = {}

    def run_import() -> None:
        try:
            outcome["job"] = import_file(
                runtime, tenant_a.id, "import_contacts",
                write_csv(f"email,name\n{first},New\n{second},New\n", name="new.csv"), {})
        except Exception as ex:  # the test looks at it
            outcome["error"] = ex

    importer = threading.Thread(target=run_import)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT set_config('swiftmail.tenant_id', %s, true)", (tenant,))
            cursor.execute("SET LOCAL statement_timeout = '30s'")  # a hang fails the test
            cursor.execute("UPDATE contacts SET name = 'Other' WHERE tenant_id = %s"
                           " AND email_lower = %s", (tenant, second))
            other_pid = other.get_backend_pid()
            importer.start()
            _waiting(monitor, "SELECT count(*) FROM pg_stat_activity"
                     " WHERE %s = ANY (pg_blocking_pids(pid))", (other_pid,))
            _waiting(monitor, "SELECT count(*) FROM pg_stat_activity"
                     " WHERE wait_event = 'advisory' AND query LIKE %s",
                     ("%pg_advisory_xact_lock_shared%",))
            try:
                cursor.execute("UPDATE contacts SET name = 'Other' WHERE tenant_id = %s"
                               " AND email_lower = %s", (tenant, first))
                other.commit()
                outcome["other"] = "committed"
            except psycopg2.errors.DeadlockDetected:
                other.rollback()
                outcome["other"] = "deadlock"
        importer.join(30)
        assert not importer.is_alive(), "the import hung"
    finally:
        other.close()
        monitor.close()
        importer.join(60)
    if outcome["other"] == "deadlock":
        assert outcome["job"].status == "succeeded"
        assert contacts_of(tenant_a.id)[first][0] == "New"
    else:  # the caller's wait or the partner's was the one broken
        error = outcome["error"]
        if isinstance(error, partner_module.PartnerFailed):
            error = error.__cause__
        assert isinstance(error, psycopg2.errors.DeadlockDetected)
        assert {name for name, _ in contacts_of(tenant_a.id).values()} == {"Other"}


def test_a_chunk_feed_fails_without_blocking_when_full() -> None:
    feed = partner_module.ChunkFeed(chunks=2)
    feed.put("a")
    feed.put("b")
    feed.fail(ValueError("stop"))  # the queue is full: it must not wait for a reader
    with pytest.raises(ValueError, match="stop"):
        feed.read()
