"""Exports: streamed CSV into storage, formula-escaped, tenant-scoped, as jobs."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from swiftmail_core import jobs
from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.exports.csv_safety import escape_cell
from swiftmail_core.exports.service import create_export, export_now, open_export
from swiftmail_core.imports.service import import_file


def _read(runtime, tenant_id, job_id) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        _, handle = open_export(runtime.plugins.storage(), job_id)
    with handle:
        return list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"), ("+1", "'+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), ("", ""), ("a=b", "a=b"),
    ],
)
def test_escape_cell(value: str, expected: str) -> None:
    assert escape_cell(value) == expected


def test_contacts_export_escapes_formulas_and_stays_in_tenant(
    runtime, tenant_a, tenant_b, tmp_path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        'email,name,note\n'
        'evil@example.com,"=HYPERLINK(""http://x"")",@cmd\n'
        'plus@example.com,+33 1 23,ok\n'
        'fine@example.com,Fine,-\n'
    )
    import_file(runtime, tenant_a.id, "import_contacts", source, {})
    other = tmp_path / "b.csv"
    other.write_text("email,name\nsecret-b@example.com,B\n")
    import_file(runtime, tenant_b.id, "import_contacts", other, {})

    job = export_now(runtime, tenant_a.id, "export_contacts", {})
    assert job.status == "succeeded", job.error
    assert job.rows_ok == 3
    rows = _read(runtime, tenant_a.id, job.id)
    by_email = {row["email"]: row for row in rows}
    assert set(by_email) == {"evil@example.com", "plus@example.com", "fine@example.com"}
    assert by_email["evil@example.com"]["name"] == "'=HYPERLINK(\"http://x\")"
    assert by_email["plus@example.com"]["name"] == "'+33 1 23"
    assert list(rows[0]) == ["id", "email", "name", "status", "attributes", "created_at",
                             "updated_at"]
    # tenant B cannot open A's export
    with tenant_tx(tenant_b.id), pytest.raises(NotFoundError):
        open_export(runtime.plugins.storage(), job.id)


def test_contacts_export_by_list(runtime, tenant_a, tmp_path) -> None:
    list_id = uuid.uuid4()
    with tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, 'L')",
            (str(tenant_a.id), str(list_id)),
        )
    first = tmp_path / "one.csv"
    first.write_text("email\nin@example.com\n")
    import_file(runtime, tenant_a.id, "import_contacts", first, {"list": "L"})
    second = tmp_path / "two.csv"
    second.write_text("email\nout@example.com\n")
    import_file(runtime, tenant_a.id, "import_contacts", second, {})
    job = export_now(runtime, tenant_a.id, "export_contacts", {"list": str(list_id)})
    assert [row["email"] for row in _read(runtime, tenant_a.id, job.id)] == ["in@example.com"]


def test_suppressions_import_and_export(runtime, tenant_a, tenant_b, tmp_path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "email,reason,detail\n"
        "Bounce@Example.com,hard_bounce,550 no such user\n"
        "manual@example.com,,=cmd|' /C calc'!A0\n"
        "bad-address,manual,\n"
        "x@example.com,shrug,\n"
        "bounce@example.com,manual,duplicate\n"
    )
    job = import_file(runtime, tenant_a.id, "import_suppressions", path, {})
    assert job.status == "succeeded", job.error
    assert (job.rows_ok, job.rows_failed) == (3, 2)
    assert job.result["created"] == 2
    assert job.result["duplicates"] == 1
    again = import_file(runtime, tenant_a.id, "import_suppressions", path, {})
    assert (again.result["created"], again.result["skipped"]) == (0, 2)

    export = export_now(runtime, tenant_a.id, "export_suppressions", {})
    rows = _read(runtime, tenant_a.id, export.id)
    assert [(row["email"], row["reason"], row["source"]) for row in rows] == [
        ("bounce@example.com", "manual", "import"),
        ("manual@example.com", "import", "import"),
    ]
    assert rows[1]["detail"] == "'=cmd|' /C calc'!A0"
    assert _read(runtime, tenant_b.id, export_now(runtime, tenant_b.id,
                                                  "export_suppressions", {}).id) == []


def test_ledger_export(runtime, tenant_a, tenant_b) -> None:
    campaign = uuid.uuid4()
    with tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name) VALUES (%s, %s, 'C')",
            (str(tenant_a.id), str(campaign)),
        )
        app_db.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, email, status, last_error, variant) "
            "VALUES (%s, %s, 'r@example.com', 'bounced', '-ERR mailbox unavailable', 'B')",
            (str(tenant_a.id), str(campaign)),
        )
    job = export_now(runtime, tenant_a.id, "export_ledger", {"campaign": str(campaign)})
    (row,) = _read(runtime, tenant_a.id, job.id)
    assert (row["email"], row["status"], row["variant"]) == ("r@example.com", "bounced", "B")
    assert row["last_error"] == "'-ERR mailbox unavailable"
    with tenant_tx(tenant_b.id), pytest.raises(NotFoundError):
        create_export("export_ledger", {"campaign": str(campaign)})


def test_export_params_are_checked(runtime, tenant_a) -> None:
    with tenant_tx(tenant_a.id):
        with pytest.raises(ValidationError, match="campaign"):
            create_export("export_ledger", {"campaign": "nope"})
        with pytest.raises(ValidationError, match="colour"):
            create_export("export_contacts", {"colour": "red"})


def test_queued_export_runs_through_the_job_runner(runtime, tenant_a) -> None:
    with tenant_tx(tenant_a.id):
        job = create_export("export_suppressions", {})
        with pytest.raises(ConflictError):
            open_export(runtime.plugins.storage(), job.id)
    ran = 0
    while True:  # other tests' queued jobs may be claimed too
        count = jobs.run_pending_jobs(runtime, limit=50)
        ran += count
        if count == 0:
            break
    assert ran >= 1
    with tenant_tx(tenant_a.id):
        done = jobs.get_job(job.id)
    assert done.status == "succeeded"
    assert done.attempts == 1
    assert done.progress_done == done.result["bytes"]
