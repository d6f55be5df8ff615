"""Import suppressions: addresses never to send to, from a streamed CSV.

Columns: ``email`` (required), ``reason`` (one of SUPPRESSION_REASONS,
default ``import``), ``detail``. An address already suppressed keeps its
existing entry (its reason may be stronger, a hard bounce say). Runs inside
the caller's ``tenant_tx``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

from swiftmail_core.db import app_db
from swiftmail_core.errors import ValidationError
from swiftmail_core.imports.contacts import BATCH_ROWS, ImportSummary
from swiftmail_core.imports.limits import ImportLimits
from swiftmail_core.imports.mapping import ColumnMapping, resolve_mapping
from swiftmail_core.imports.report import ErrorReport
from swiftmail_core.imports.source import CsvSource
from swiftmail_core.imports.staging import RowStream, copy_into
from swiftmail_core.imports.validation import cell_problem, normalise_email

SUPPRESSION_REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "import", "blocklist")
SUPPRESSION_ALIASES = {
    "email": "email", "emailaddress": "email", "mail": "email",
    "reason": "reason", "detail": "detail", "details": "detail", "note": "detail",
}
STAGE = "import_suppressions_stage"


@dataclasses.dataclass(frozen=True)
class SuppressionImportOptions:
    """What to do with a suppressions file."""

    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    limits: ImportLimits = dataclasses.field(default_factory=ImportLimits)


def _valid_rows(
    source: CsvSource,
    mapping: ColumnMapping,
    limits: ImportLimits,
    report: ErrorReport,
    summary: ImportSummary,
    on_progress: Callable[[int], None] | None,
) -> Iterator[list[tuple[str, ...]]]:
    email_index = mapping.fields["email"]
    reason_index = mapping.fields.get("reason")
    detail_index = mapping.fields.get("detail")
    reasons = frozenset(SUPPRESSION_REASONS)
    row_number = 1
    batch: list[tuple[str, ...]] = []
    for row in source.rows():
        row_number += 1
        if row_number - 1 > limits.max_rows:
            raise limits.too_many_rows()
        if len(row) != mapping.column_count:
            if row:
                summary.rows_failed += 1
                report.add(row_number, f"has {len(row)} columns; the header has "
                           f"{mapping.column_count}", ",".join(row))
            continue
        problem = cell_problem(row, limits.max_field_length, source.may_contain_nul)
        if problem is not None:
            summary.rows_failed += 1
            report.add(row_number, problem)
            continue
        email, problem = normalise_email(row[email_index])
        if email is None:
            summary.rows_failed += 1
            report.add(row_number, problem or "email is not valid", row[email_index])
            continue
        reason = row[reason_index].strip().lower() if reason_index is not None else ""
        reason = reason or "import"
        if reason not in reasons:
            summary.rows_failed += 1
            report.add(row_number, f"reason must be one of {', '.join(SUPPRESSION_REASONS)}",
                       reason)
            continue
        detail = row[detail_index] if detail_index is not None else ""
        batch.append((str(row_number), email.lower(), reason, detail))
        summary.rows_ok += 1
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
            if on_progress is not None:
                on_progress(source.bytes_read)
    if batch:
        yield batch
    if on_progress is not None:
        on_progress(source.bytes_read)


def import_suppressions(
    source: CsvSource,
    tenant_id: uuid.UUID,
    options: SuppressionImportOptions,
    report: ErrorReport,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import suppressions from ``source``; call inside ``tenant_tx(tenant_id)``."""
    header = source.open()
    mapping = resolve_mapping(
        header, options.mapping, SUPPRESSION_ALIASES, required=("email",), allow_attributes=False
    )
    summary = ImportSummary(mapping=mapping.describe(header))
    cursor = app_db.cursor()
    cursor.execute(
        f"CREATE TEMP TABLE {STAGE} (row_no bigint NOT NULL, email_lower text NOT NULL, "
        "reason text NOT NULL, detail text) ON COMMIT DROP"
    )
    stream = RowStream(_valid_rows(source, mapping, options.limits, report, summary, on_progress))
    copy_into(cursor, STAGE, ["row_no", "email_lower", "reason", "detail"], stream)
    summary.bytes_read = source.bytes_read
    if summary.rows_ok == 0 and summary.rows_failed == 0:
        raise ValidationError.for_field("file", "has a header but no data rows")
    cursor.execute(f"ANALYZE {STAGE}")
    # APPSEC: the tenant comes from tenant_tx, and WITH CHECK refuses any other.
    cursor.execute(
        'WITH src AS MATERIALIZED (SELECT DISTINCT ON (email_lower COLLATE "C") email_lower,'
        f" reason, coalesce(detail, '') AS detail FROM {STAGE}"
        ' ORDER BY email_lower COLLATE "C", row_no DESC),'
        " added AS (INSERT INTO suppressions (tenant_id, email_lower, reason, source, detail)"
        " SELECT %s, email_lower, reason, 'import', detail FROM src"
        " ON CONFLICT (tenant_id, email_lower) DO NOTHING RETURNING 1) "
        "SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM src)",
        (str(tenant_id),),
    )
    created, distinct = cursor.fetchone()
    summary.created = created
    summary.duplicates = summary.rows_ok - distinct
    summary.skipped = distinct - created
    cursor.execute(f"DROP TABLE {STAGE}")
    return summary
