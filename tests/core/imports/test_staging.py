"""The COPY feed: every cell comes back from PostgreSQL exactly as it went in."""

from __future__ import annotations

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.imports.staging import RowStream, copy_into, copy_text

AWKWARD = ["tab\there", "new\nline", "carriage\rreturn", "crlf\r\n", "back\\slash",
           "\\N", "\\.", 'quote "and", comma', "ünïcödé", " spaced ", "\\t literal"]


def test_a_plain_batch_is_joined_without_escaping() -> None:
    assert copy_text([("2", "a@example.com", "Ann"), ("3", "b@example.com", "")]) == (
        "2\ta@example.com\tAnn\n3\tb@example.com\t\n")
    assert copy_text([]) == ""


def test_every_awkward_cell_round_trips_through_copy(tenant_a) -> None:  # type: ignore[no-untyped-def]
    rows = [(str(number), cell, "") for number, cell in enumerate(AWKWARD)]
    plain = [(str(100 + number), f"plain{number}", "x") for number in range(3)]
    # One batch with an awkward cell among plain rows (escaped as a whole), one plain batch.
    batches = iter([plain[:1] + rows, plain[1:]])
    with tenant_tx(tenant_a.id):
        cursor = app_db.cursor()
        cursor.execute("CREATE TEMP TABLE staging_probe (row_no bigint, cell text, empty text)"
                       " ON COMMIT DROP")
        copy_into(cursor, "staging_probe", ["row_no", "cell", "empty"], RowStream(batches))
        cursor.execute("SELECT row_no, cell, empty FROM staging_probe ORDER BY row_no")
        stored = cursor.fetchall()
    assert [(row_no, cell) for row_no, cell, _ in stored] == [
        *((number, cell) for number, cell in enumerate(AWKWARD)),
        *((100 + number, f"plain{number}") for number in range(3))]
    # An empty cell is NULL (the merge's coalesce and jsonb_strip_nulls rely on it).
    assert [empty for _, _, empty in stored][:len(AWKWARD)] == [None] * len(AWKWARD)
    assert [empty for _, _, empty in stored][len(AWKWARD):] == ["x"] * 3
