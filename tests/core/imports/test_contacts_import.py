"""Contacts import against real PostgreSQL as the app role, two tenants."""

from __future__ import annotations

import csv
import io

import pytest

from swiftmail_core import jobs
from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.imports.limits import ImportLimits
from swiftmail_core.imports.service import import_file, open_error_report
from tests.core.imports.conftest import contacts_of, subscribers_of

GOOD = (
    "email,name,city\n"
    "Ann@Example.COM,Ann,Paris\n"
    "bob@example.com,Bob,\n"
    "not-an-email,Nobody,Rome\n"
    "carol@example.com,Carol,Oslo,extra\n"
    "ann@example.com,Ann Again,Lyon\n"
    "\n"
    "  dave@example.org  ,Dave,Bern\n"
)


def _report_rows(runtime, tenant_id, job_id) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        handle = open_error_report(runtime.plugins.storage(), job_id)
    with handle:
        return list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")))


def test_import_validates_dedupes_upserts_and_subscribes(
    runtime, tenant_a, make_list, write_csv
) -> None:
    list_id = make_list(tenant_a.id)
    job = import_file(
        runtime, tenant_a.id, "import_contacts", write_csv(GOOD), {"list": "Newsletter"}
    )
    assert job.status == "succeeded", job.error
    assert (job.rows_ok, job.rows_failed) == (4, 2)
    assert job.result["created"] == 3
    assert job.result["duplicates"] == 1
    assert job.result["subscribed"] == 3
    contacts = contacts_of(tenant_a.id)
    assert set(contacts) == {"ann@example.com", "bob@example.com", "dave@example.org"}
    # the last row for an address wins; the domain is lowercased, the local part kept
    assert contacts["ann@example.com"] == ("Ann Again", {"city": "Lyon"})
    assert contacts["bob@example.com"] == ("Bob", {})
    subscribers = subscribers_of(tenant_a.id, list_id)
    assert subscribers["dave@example.org"] == ("confirmed", "import")
    report = _report_rows(runtime, tenant_a.id, job.id)
    assert [(row["row"], row["reason"]) for row in report] == [
        ("4", "email must contain exactly one @"),
        ("5", "has 4 columns; the header has 3"),
    ]
    assert job.progress_done == job.progress_total


def test_reimport_is_idempotent_and_updates_only_changes(
    runtime, tenant_a, make_list, write_csv
) -> None:
    make_list(tenant_a.id)
    path = write_csv(GOOD)
    import_file(runtime, tenant_a.id, "import_contacts", path, {"list": "Newsletter"})
    before = contacts_of(tenant_a.id)
    again = import_file(runtime, tenant_a.id, "import_contacts", path, {"list": "Newsletter"})
    assert again.result["created"] == 0
    assert again.result["updated"] == 0
    assert again.result["unchanged"] == 3
    assert again.result["subscribed"] == 0
    assert contacts_of(tenant_a.id) == before
    changed = write_csv("email,name,plan\nbob@example.com,,gold\n", name="changed.csv")
    third = import_file(runtime, tenant_a.id, "import_contacts", changed, {})
    assert third.result["updated"] == 1
    # an empty cell keeps the stored name; attributes merge
    assert contacts_of(tenant_a.id)["bob@example.com"] == ("Bob", {"plan": "gold"})


def test_skip_existing_leaves_existing_contacts_alone(
    runtime, tenant_a, make_list, write_csv
) -> None:
    list_id = make_list(tenant_a.id)
    import_file(runtime, tenant_a.id, "import_contacts",
                write_csv("email,name\nold@example.com,Old\n", name="a.csv"), {})
    job = import_file(
        runtime, tenant_a.id, "import_contacts",
        write_csv("email,name\nold@example.com,Changed\nnew@example.com,New\n", name="b.csv"),
        {"skip_existing": True, "list": str(list_id)},
    )
    assert (job.result["created"], job.result["skipped"], job.result["subscribed"]) == (1, 1, 1)
    assert contacts_of(tenant_a.id)["old@example.com"][0] == "Old"
    assert set(subscribers_of(tenant_a.id, list_id)) == {"new@example.com"}


def test_import_never_touches_another_tenant(
    runtime, tenant_a, tenant_b, make_list, write_csv
) -> None:
    path = write_csv("email,name\nshared@example.com,From B\nonly-b@example.com,B\n")
    import_file(runtime, tenant_b.id, "import_contacts", path, {})
    make_list(tenant_a.id)
    job = import_file(
        runtime, tenant_a.id, "import_contacts",
        write_csv("email,name\nshared@example.com,From A\n", name="a.csv"),
        {"list": "Newsletter"},
    )
    assert job.result["created"] == 1  # B's identical address is invisible, not "existing"
    assert contacts_of(tenant_b.id) == {
        "shared@example.com": ("From B", {}), "only-b@example.com": ("B", {}),
    }
    assert set(contacts_of(tenant_a.id)) == {"shared@example.com"}
    # A cannot see B's job, nor subscribe to B's list
    with tenant_tx(tenant_b.id), pytest.raises(NotFoundError):
        jobs.get_job(job.id)
    with pytest.raises(NotFoundError):
        import_file(runtime, tenant_b.id, "import_contacts", path, {"list": "Newsletter"})


def test_gzip_input(runtime, tenant_a, write_csv) -> None:
    job = import_file(
        runtime, tenant_a.id, "import_contacts",
        write_csv("E-mail,Full name\nzip@example.com,Zip\n", gz=True), {},
    )
    assert job.status == "succeeded"
    assert contacts_of(tenant_a.id) == {"zip@example.com": ("Zip", {})}


def test_column_mapping(runtime, tenant_a, write_csv) -> None:
    job = import_file(
        runtime, tenant_a.id, "import_contacts",
        write_csv("Address;Who;Town;Notes\nmap@example.com;Mapped;Kyiv;ignore me\n"),
        {"map": ["Address=email", "Who=name", "Town=attributes.city", "Notes=-"]},
    )
    assert job.status == "succeeded", job.error
    assert contacts_of(tenant_a.id) == {"map@example.com": ("Mapped", {"city": "Kyiv"})}


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("name\nx\n", {}, "no column maps to 'email'"),
        ("email,email\na@b.co,a@b.co\n", {}, "column 'email' twice"),
        ("email\n", {}, "no data rows"),
        ("", {}, "is empty"),
        ("email\na@b.co\n", {"map": ["Nope=email"]}, "column 'Nope' is not in the file"),
        ("email\na@b.co\n", {"map": ["email=phone"]}, "'phone' is not a target"),
    ],
)
def test_bad_files_fail_with_a_clear_error_and_write_nothing(
    runtime, tenant_a, write_csv, text, params, message
) -> None:
    with pytest.raises(ValidationError, match=message):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv(text), params)
    assert contacts_of(tenant_a.id) == {}


def test_missing_list_is_not_found(runtime, tenant_a, write_csv) -> None:
    with pytest.raises(NotFoundError):
        import_file(runtime, tenant_a.id, "import_contacts",
                    write_csv("email\na@example.com\n"), {"list": "nope"})


def test_limits(runtime, tenant_a, write_csv) -> None:
    limits = ImportLimits(max_bytes=200, max_rows=3, max_columns=3, max_field_length=20)
    rows = "".join(f"u{i}@example.com\n" for i in range(4))
    with pytest.raises(ValidationError, match="more than 3 rows"):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv("email\n" + rows), {},
                    limits=limits)
    with pytest.raises(ValidationError, match="4 columns; at most 3"):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv("email,a,b,c\n"), {},
                    limits=limits)
    big = "email\n" + "".join(f"user{i}@example.com\n" for i in range(20))
    with pytest.raises(ValidationError, match="200-byte import limit"):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv(big), {}, limits=limits)
    # a gzip bomb stops at the decompressed limit too
    with pytest.raises(ValidationError, match="200-byte import limit"):
        import_file(runtime, tenant_a.id, "import_contacts", write_csv(big, gz=True), {},
                    limits=limits)
    assert contacts_of(tenant_a.id) == {}
    job = import_file(
        runtime, tenant_a.id, "import_contacts",
        write_csv("email,name\nlong@example.com," + "x" * 21 + "\nok@example.com,ok\n"), {},
        limits=limits,
    )
    assert (job.rows_ok, job.rows_failed) == (1, 1)
    assert job.result["errors_sample"] == [
        {"row": 2, "reason": "a cell is longer than 20 characters"}
    ]


def test_failed_import_marks_the_job_failed(runtime, tenant_a, write_csv) -> None:
    with pytest.raises(ValidationError):
        import_file(runtime, tenant_a.id, "import_contacts",
                    write_csv("email\n"), {})
    with tenant_tx(tenant_a.id):
        (job,) = jobs.list_jobs(("import_contacts",), limit=1)
    assert job.status == "failed"


def test_not_utf8_is_a_clear_error(runtime, tenant_a, tmp_path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nzoe@example.com,Zo\xeb\n".encode("latin-1"))
    with pytest.raises(ValidationError, match="not UTF-8"):
        import_file(runtime, tenant_a.id, "import_contacts", path, {})


def test_existing_unchanged_contacts_are_subscribed_on_reimport(
    runtime, tenant_a, make_list, write_csv
) -> None:
    path = write_csv(GOOD)
    import_file(runtime, tenant_a.id, "import_contacts", path, {})
    list_id = make_list(tenant_a.id)
    job = import_file(runtime, tenant_a.id, "import_contacts", path, {"list": str(list_id)})
    assert (job.result["unchanged"], job.result["subscribed"]) == (3, 3)
    assert set(subscribers_of(tenant_a.id, list_id)) == {
        "ann@example.com", "bob@example.com", "dave@example.org",
    }


def test_unsubscribed_contacts_stay_unsubscribed(runtime, tenant_a, make_list, write_csv) -> None:
    from swiftmail_core.db import app_db

    list_id = make_list(tenant_a.id)
    path = write_csv("email,name\ngone@example.com,Gone\n")
    import_file(runtime, tenant_a.id, "import_contacts", path, {"list": str(list_id)})
    with tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE subscriptions SET status = 'unsubscribed'")
    changed = write_csv("email,name\ngone@example.com,Renamed\n", name="again.csv")
    job = import_file(runtime, tenant_a.id, "import_contacts", changed, {"list": str(list_id)})
    assert (job.result["updated"], job.result["subscribed"]) == (1, 0)
    assert subscribers_of(tenant_a.id, list_id)["gone@example.com"][0] == "unsubscribed"


def test_not_a_csv_is_a_clear_error(runtime, tenant_a, tmp_path) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"x" * 200_000)
    with pytest.raises(ValidationError, match="header row longer than"):
        import_file(runtime, tenant_a.id, "import_contacts", path, {})
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(ValidationError, match="gzip"):
        import_file(runtime, tenant_a.id, "import_contacts", broken, {})


def test_excel_style_file_with_bom_crlf_and_quotes(runtime, tenant_a, tmp_path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffEmail,Name,Note\r\n"
        'zoë@exämple.com,"Zoë, the ""first""",multi\r\n'
        '"quoted@example.com","Line\r\nbreak",\r\n'.encode()
    )
    job = import_file(runtime, tenant_a.id, "import_contacts", path, {})
    assert (job.rows_ok, job.rows_failed) == (2, 0), job.result
    contacts = contacts_of(tenant_a.id)
    # the internationalised domain is stored as punycode
    assert contacts["zoë@xn--exmple-cua.com"] == ('Zoë, the "first"', {"Note": "multi"})
    assert contacts["quoted@example.com"] == ("Line\r\nbreak", {})


def test_a_cell_with_a_carriage_return_or_a_nul_loses_only_its_row(
    runtime, tenant_a, write_csv
) -> None:
    # Regression: a quoted cell with a bare CR, or a NUL anywhere, failed the whole
    # import with "internal error (BadCopyFileFormat)" and the valid rows were lost.
    text = ("email,name,note\n"
            "ok1@example.com,One,fine\n"
            'cr@example.com,Carriage,"first\rsecond"\n'
            "nul@example.com,Nul,bad\x00cell\n"
            "ok2@example.com,Two,fine\n")
    job = import_file(runtime, tenant_a.id, "import_contacts", write_csv(text), {})
    assert job.status == "succeeded", job.error
    assert (job.rows_ok, job.rows_failed) == (3, 1)
    contacts = contacts_of(tenant_a.id)
    assert set(contacts) == {"ok1@example.com", "cr@example.com", "ok2@example.com"}
    assert contacts["cr@example.com"] == ("Carriage", {"note": "first\rsecond"})
    report = _report_rows(runtime, tenant_a.id, job.id)
    assert [(row["row"], row["reason"]) for row in report] == [
        ("4", "a cell contains a NUL character")]


def test_an_import_without_a_list_reports_no_subscriptions(runtime, tenant_a, write_csv) -> None:
    # Regression: the summary said "subscribed": 1 for an import into no list.
    job = import_file(runtime, tenant_a.id, "import_contacts",
                      write_csv("email\nsolo1@example.com\nsolo2@example.com\n"), {})
    assert job.status == "succeeded", job.error
    assert job.result["created"] == 2 and job.result["subscribed"] == 0


def test_one_file_of_new_changed_and_listed_contacts_subscribes_each_once(
    runtime, tenant_a, make_list, write_csv
) -> None:
    # New contacts are subscribed by a plain INSERT, existing ones with ON CONFLICT:
    # both halves count, and an existing subscription is left as it was.
    from swiftmail_core.db import app_db

    list_id = make_list(tenant_a.id)
    listed = write_csv("email,name\nkept@example.com,Kept\n", name="listed.csv")
    import_file(runtime, tenant_a.id, "import_contacts", listed, {"list": str(list_id)})
    import_file(runtime, tenant_a.id, "import_contacts",
                write_csv("email,name\nknown@example.com,Known\n", name="known.csv"), {})
    with tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE subscriptions SET status = 'unsubscribed'")
    mixed = write_csv(
        "email,name\nkept@example.com,Kept Renamed\nknown@example.com,Known Renamed\n"
        "new1@example.com,New\nnew2@example.com,New\n", name="mixed.csv")
    job = import_file(runtime, tenant_a.id, "import_contacts", mixed, {"list": str(list_id)})
    assert (job.result["created"], job.result["updated"], job.result["subscribed"]) == (2, 2, 3)
    subscribers = subscribers_of(tenant_a.id, list_id)
    assert {email: row[0] for email, row in subscribers.items()} == {
        "kept@example.com": "unsubscribed", "known@example.com": "confirmed",
        "new1@example.com": "confirmed", "new2@example.com": "confirmed",
    }
    again = import_file(runtime, tenant_a.id, "import_contacts", mixed, {"list": str(list_id)})
    assert (again.result["created"], again.result["subscribed"]) == (0, 0)
    skip = write_csv("email\nknown@example.com\nnew3@example.com\n", name="skip.csv")
    skipped = import_file(runtime, tenant_a.id, "import_contacts", skip,
                          {"list": str(list_id), "skip_existing": True})
    assert (skipped.result["created"], skipped.result["subscribed"]) == (1, 1)


def test_a_contact_added_by_another_transaction_during_the_merge_is_merged(
    runtime, tenant_a, make_list, write_csv, targets
) -> None:
    # New addresses are a plain INSERT; one that another transaction adds after the
    # merge's snapshot makes it fail with a unique violation, and the merge runs again
    # through ON CONFLICT: the import succeeds and the address is one contact.
    import threading
    import time

    import psycopg2

    list_id = make_list(tenant_a.id)
    other = psycopg2.connect(targets.dsn("app"))
    with other.cursor() as cursor:
        cursor.execute("SELECT set_config('swiftmail.tenant_id', %s, true)", (str(tenant_a.id),))
        cursor.execute("INSERT INTO contacts (tenant_id, email, name) "
                       "VALUES (%s, 'race@example.com', 'Other')", (str(tenant_a.id),))

    def commit_later() -> None:
        time.sleep(1.5)
        other.commit()

    committer = threading.Thread(target=commit_later)
    committer.start()
    try:
        job = import_file(runtime, tenant_a.id, "import_contacts",
                          write_csv("email,name\nrace@example.com,Raced\nfree@example.com,Free\n"),
                          {"list": str(list_id)})
    finally:
        committer.join()
        other.close()
    assert job.status == "succeeded", job.error
    assert job.result["created"] + job.result["updated"] == 2
    contacts = contacts_of(tenant_a.id)
    assert set(contacts) == {"race@example.com", "free@example.com"}
    assert set(subscribers_of(tenant_a.id, list_id)) == {"race@example.com", "free@example.com"}


def test_cells_with_tabs_backslashes_and_line_breaks_are_stored_as_they_are(
    runtime, tenant_a, tmp_path
) -> None:
    # The staging COPY is in text format: these are the characters it must escape.
    path = tmp_path / "awkward.csv"
    path.write_text(
        "email,name,note\n"
        'tab@example.com,"Tab\there","back\\slash \\N"\n'
        'lines@example.com,"two\nlines","\\."\n'
        "plain@example.com,Plain,\n", encoding="utf-8")
    job = import_file(runtime, tenant_a.id, "import_contacts", path, {})
    assert (job.rows_ok, job.rows_failed) == (3, 0), job.result
    contacts = contacts_of(tenant_a.id)
    assert contacts["tab@example.com"] == ("Tab\there", {"note": "back\\slash \\N"})
    assert contacts["lines@example.com"] == ("two\nlines", {"note": "\\."})
    assert contacts["plain@example.com"] == ("Plain", {})


def test_merge_settings_stay_inside_the_import_transaction(runtime, tenant_a) -> None:
    """The merge's work_mem and JIT settings are the import's own: a pooled connection is clean."""
    from swiftmail_core.db import app_db
    from swiftmail_core.imports import contacts as contact_import
    from swiftmail_core.imports.source import CsvSource

    class Report:
        def add(self, row: int, reason: str, value: str = "") -> None:
            raise AssertionError(f"row {row} refused: {reason}")

    def settings() -> tuple[str, str]:
        return app_db.execute_sql(
            "SELECT current_setting('jit'), current_setting('work_mem')").fetchone()

    with tenant_tx(tenant_a.id):
        before = settings()
        source = CsvSource(io.BytesIO(b"email\nann@example.com\n"), ImportLimits())
        contact_import.import_contacts(
            source, tenant_a.id, contact_import.ContactImportOptions(), Report())
        assert settings() == (contact_import.MERGE_JIT, contact_import.MERGE_WORK_MEM)
    with tenant_tx(tenant_a.id):
        assert settings() == before
