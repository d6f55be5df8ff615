"""Import contacts: validate a streamed CSV, COPY it to staging, merge set-based.

Runs inside the caller's ``tenant_tx``: the staging table is TEMP (dropped
at commit) and every write to ``contacts`` and ``subscriptions`` goes
through the tenant's row-level security policies. Per row, Python does only
a length check, one regex match and a list build; deduplication, upsert and
list subscription are three SQL statements. A large file is merged in two
parts at once, on two connections (``Part``, ``imports.partner``).

Within one file the last row for an address wins. Upsert fills a non-empty
name and merges attributes (new keys win, empty cells keep what is stored);
an unchanged contact is not rewritten, so a re-import is idempotent.
With ``skip_existing``, existing contacts are left alone entirely (neither
updated nor subscribed). Subscriptions are created ``confirmed`` with
``consent_source = 'import'``; an existing subscription (an unsubscribe,
say) is never changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import psycopg2.errors

from swiftmail_core import parent_rows
from swiftmail_core.contact_ids import ORDERED_UUID_SQL, ordered_uuid_bases
from swiftmail_core.db import app_db, current_tenant
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.imports.limits import ImportLimits
from swiftmail_core.imports.mapping import ColumnMapping, resolve_mapping
from swiftmail_core.imports.partner import ChunkFeed, TeeStream, partnered
from swiftmail_core.imports.report import ErrorReport
from swiftmail_core.imports.source import CsvSource
from swiftmail_core.imports.staging import CopySource, RowStream, copy_into
from swiftmail_core.imports.validation import (
    EMAIL_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_LOCAL_LENGTH,
    cell_problem,
    normalise_email,
)

CONTACT_ALIASES = {
    "email": "email", "emailaddress": "email", "mail": "email",
    "name": "name", "fullname": "name", "contactname": "name",
}
BATCH_ROWS = 5000
STAGE = "import_contacts_stage"
# jsonb_build_object takes at most 100 arguments: build attributes in chunks.
PAIRS_PER_CALL = 40
# Memory for the merge's sorts and hashes (this transaction only): a million
# rows sort in memory instead of spilling to disk.
MERGE_WORK_MEM = "256MB"
# The attributes GIN index's pending list for this transaction only: entries
# are appended cheaply and merged into the index later (autovacuum, or the
# next insert that fills the list), off the import's critical path. Queries
# stay correct meanwhile: a GIN scan reads the pending list too.
MERGE_GIN_PENDING_LIST = "512MB"
# No JIT for the merge (this transaction only): its plan costs far more than
# jit_above_cost, and compiling its expressions took longer than it saved
# (docs/benchmarks.md, Imports, "session 15").
MERGE_JIT = "off"
#: A file at least this big (bytes, as uploaded) is merged on two connections,
#: each taking the addresses of its part (``imports.partner``).
PARTNER_MIN_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class ContactImportOptions:
    """What to do with a contacts file."""

    list_id: uuid.UUID | None = None
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    skip_existing: bool = False
    limits: ImportLimits = dataclasses.field(default_factory=ImportLimits)


@dataclasses.dataclass
class ImportSummary:
    """Counts of what an import did (stored as the job's ``result``)."""

    rows_ok: int = 0
    rows_failed: int = 0
    duplicates: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    subscribed: int = 0
    bytes_read: int = 0
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def lap(self, phase: str, started: float) -> float:
        """Record the seconds ``phase`` took since ``started``; return now."""
        now = time.perf_counter()
        self.seconds[phase] = round(now - started, 3)
        return now

    def as_result(self) -> dict[str, Any]:
        """Return the JSON-ready summary."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MergeCounts:
    """What one part's merge did."""

    created: int = 0
    updated: int = 0
    distinct: int = 0
    subscribed: int = 0

    def __add__(self, other: MergeCounts) -> MergeCounts:
        return MergeCounts(*(mine + theirs for mine, theirs in
                             zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


@dataclasses.dataclass(frozen=True)
class Part:
    """Which addresses of the file one connection merges: those whose hash falls in ``index``.

    The hash is PostgreSQL's, of ``lower(email)``: the very value the
    contacts' unique key holds, so two rows for one contact always fall in
    the same part and the parts never wait for each other's rows.
    """

    index: int = 0
    count: int = 1
    #: ``ordered_uuid_bases()`` shared by the parts (drawn anew for a single part).
    bases: tuple[int, int] | None = None

    def id_bases(self) -> tuple[int, int]:
        """Return the bases of this part's new contact ids (``ORDERED_UUID_SQL``).

        Each later part's ids start one millisecond later: every part appends
        to a range of its own in the contacts' and subscriptions' keys
        instead of both fighting over the same last page (measured: 2 to 3 s
        less CPU for the pair per million rows).
        """
        high, low = self.bases or ordered_uuid_bases()
        return high + (self.index << 16), low

    def where(self, column: str = "email") -> str:
        """Return the SQL condition for this part's rows (always true for a single part)."""
        if self.count == 1:
            return "true"
        return f"mod(hashtext(lower({column})) & 2147483647, {self.count:d}) = {self.index:d}"


def resolve_list(list_ref: str) -> uuid.UUID:
    """Return the current tenant's list id for an id or a name."""
    try:
        parsed: uuid.UUID | None = uuid.UUID(str(list_ref))
    except ValueError:
        parsed = None
    # APPSEC: RLS scopes the lookup too; another tenant's list id is "not found".
    tenant = str(current_tenant())
    if parsed is not None:
        row = app_db.execute_sql(
            "SELECT id FROM lists WHERE tenant_id = %s AND id = %s FOR SHARE",
            (tenant, str(parsed))).fetchone()
    else:
        row = app_db.execute_sql(
            "SELECT id FROM lists WHERE tenant_id = %s AND name = %s FOR SHARE",
            (tenant, list_ref)).fetchone()
    if row is None:
        raise NotFoundError(f"no list {list_ref!r}")
    return uuid.UUID(str(row[0]))


def _attribute_sql(keys: Sequence[str]) -> tuple[str, list[str]]:
    if not keys:
        return "'{}'::jsonb", []
    calls = []
    for start in range(0, len(keys), PAIRS_PER_CALL):
        chunk = range(start, min(start + PAIRS_PER_CALL, len(keys)))
        pairs = ", ".join(f"%s::text, a{index}" for index in chunk)
        calls.append(f"jsonb_build_object({pairs})")
    return f"jsonb_strip_nulls({' || '.join(calls)})", list(keys)


def _valid_rows(
    source: CsvSource,
    mapping: ColumnMapping,
    limits: ImportLimits,
    report: ErrorReport,
    summary: ImportSummary,
    on_progress: Callable[[int], None] | None,
) -> Iterator[list[tuple[str, ...]]]:
    """Yield batches of (row_no, email, name, *attributes) as text; report bad rows."""
    email_index = mapping.fields["email"]
    name_index = mapping.fields.get("name")
    attribute_indexes = [index for _, index in mapping.attributes]
    if len(attribute_indexes) == 1:
        only = attribute_indexes[0]

        def pick(row: list[str]) -> tuple[str, ...]:
            return (row[only],)
    elif attribute_indexes:
        pick = itemgetter(*attribute_indexes)  # type: ignore[assignment]
    else:
        def pick(row: list[str]) -> tuple[str, ...]:
            return ()
    columns = mapping.column_count
    max_rows = limits.max_rows
    max_length = limits.max_field_length
    match = EMAIL_PATTERN.match
    row_number = 1  # the header
    batch: list[tuple[str, ...]] = []
    ok = failed = 0
    for row in source.rows():
        row_number += 1
        if row_number - 1 > max_rows:
            raise limits.too_many_rows()
        if len(row) != columns:
            if not row:
                continue  # a blank line
            failed += 1
            report.add(row_number, f"has {len(row)} columns; the header has {columns}",
                       ",".join(row))
            continue
        problem = cell_problem(row, max_length, source.may_contain_nul)
        if problem is not None:
            failed += 1
            report.add(row_number, problem)
            continue
        raw = row[email_index]
        matched = match(raw)
        if matched is not None and len(raw) <= MAX_EMAIL_LENGTH:
            local, domain = matched.groups()
            if len(local) > MAX_LOCAL_LENGTH:
                failed += 1
                report.add(row_number, "email's local part is too long", raw)
                continue
            email = f"{local}@{domain.lower()}"
        else:
            normalised, reason = normalise_email(raw)
            if normalised is None:
                failed += 1
                report.add(row_number, reason or "email is not valid", raw)
                continue
            email = normalised
        name = row[name_index].strip() if name_index is not None else ""
        batch.append((str(row_number), email, name, *pick(row)))
        ok += 1
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
            if on_progress is not None:
                on_progress(source.bytes_read)
    if batch:
        yield batch
    summary.rows_ok = ok
    summary.rows_failed = failed
    if on_progress is not None:
        on_progress(source.bytes_read)


def import_contacts(
    source: CsvSource,
    tenant_id: uuid.UUID,
    options: ContactImportOptions,
    report: ErrorReport,
    on_progress: Callable[[int], None] | None = None,
    partners: contextlib.ExitStack | None = None,
) -> ImportSummary:
    """Import contacts from ``source``; call inside ``tenant_tx(tenant_id)``.

    With ``partners`` (an exit stack the caller closes just before its
    transaction commits), half of the addresses are merged on a second
    connection (``imports.partner``), committed when the stack closes.
    """
    header = source.open()
    mapping = resolve_mapping(header, options.mapping, CONTACT_ALIASES, required=("email",))
    summary = ImportSummary(mapping=mapping.describe(header))
    if options.list_id is not None:
        resolve_list(str(options.list_id))
    keys = [key for key, _ in mapping.attributes]
    cursor = app_db.cursor()
    part = Part()
    partner = None
    stream: RowStream | TeeStream = RowStream(
        _valid_rows(source, mapping, options.limits, report, summary, on_progress))
    if partners is not None:
        bases = ordered_uuid_bases()
        part = Part(0, 2, bases)
        work = functools.partial(_merge_part, tenant_id, keys, options, Part(1, 2, bases))
        partner = partners.enter_context(partnered(tenant_id, cursor, work))
        stream = TeeStream(stream, partner.feed)
    _lock_tenant(tenant_id)
    started = time.perf_counter()
    _stage(cursor, keys, stream)
    started = summary.lap("validate_and_stage", started)
    summary.bytes_read = source.bytes_read
    if summary.rows_ok == 0 and summary.rows_failed == 0:
        raise ValidationError.for_field("file", "has a header but no data rows")
    counts = _merge_stage(cursor, tenant_id, keys, options, part)
    if partner is not None:
        counts += partner.wait_merged()
    summary.lap("merge_and_subscribe", started)
    summary.created = counts.created
    summary.subscribed = counts.subscribed
    summary.duplicates = summary.rows_ok - counts.distinct
    if options.skip_existing:
        summary.skipped = counts.distinct - counts.created
    else:
        summary.updated = counts.updated
        summary.unchanged = counts.distinct - counts.created - counts.updated
    return summary


def _lock_tenant(tenant_id: uuid.UUID) -> None:
    # NOTE: stands in for the contacts' foreign key to tenants (0191): once here
    # instead of once per row. Subscriptions need no lock on their contacts:
    # the merge creates them, or ON CONFLICT DO UPDATE locks them.
    if not parent_rows.lock_tenant(app_db, tenant_id):
        raise NotFoundError(f"no tenant {tenant_id}")


def _stage(cursor: Any, keys: Sequence[str], stream: CopySource) -> None:
    """COPY the validated rows into this transaction's TEMP staging table."""
    attribute_columns = [f"a{index}" for index in range(len(keys))]
    cursor.execute(
        f"CREATE TEMP TABLE {STAGE} (row_no bigint NOT NULL, email text NOT NULL, "
        f"name text{''.join(f', {column} text' for column in attribute_columns)}) "
        "ON COMMIT DROP"
    )
    copy_into(cursor, STAGE, ["row_no", "email", "name", *attribute_columns], stream)


def _merge_stage(cursor: Any, tenant_id: uuid.UUID, keys: Sequence[str],
                 options: ContactImportOptions, part: Part) -> MergeCounts:
    """Merge ``part`` of the staged rows into contacts and the list; drop the staging table."""
    cursor.execute(f"ANALYZE {STAGE}")
    cursor.execute("SELECT set_config('work_mem', %s, true), "
                   "set_config('gin_pending_list_limit', %s, true), set_config('jit', %s, true)",
                   (MERGE_WORK_MEM, MERGE_GIN_PENDING_LIST, MERGE_JIT))
    counts = _merge(cursor, tenant_id, keys, options, part)
    unchanged = counts.distinct - counts.created - counts.updated
    if options.list_id is not None and not options.skip_existing and unchanged:
        counts += MergeCounts(subscribed=_subscribe_unchanged(cursor, tenant_id, options, part))
    cursor.execute(f"DROP TABLE {STAGE}")
    return counts


def _merge_part(tenant_id: uuid.UUID, keys: Sequence[str], options: ContactImportOptions,
                part: Part, cursor: Any, feed: ChunkFeed) -> MergeCounts:
    """The partner connection's share: stage the whole file, merge ``part`` of it."""
    _lock_tenant(tenant_id)
    _stage(cursor, keys, feed)
    return _merge_stage(cursor, tenant_id, keys, options, part)


def _merge(
    cursor: Any,
    tenant_id: uuid.UUID,
    keys: Sequence[str],
    options: ContactImportOptions,
    part: Part,
) -> MergeCounts:
    attributes, key_params = _attribute_sql(keys)
    # NOTE: a bytewise ("C") sort is much cheaper than a locale-aware one, and
    # with the C.UTF-8 database collation it is the same order as the
    # email index, so new rows still append to it.
    source_sql = (
        'SELECT DISTINCT ON (lower(email) COLLATE "C") email, coalesce(name, \'\') AS name, '
        f"{attributes} AS attributes FROM {STAGE} WHERE {part.where()} "
        'ORDER BY lower(email) COLLATE "C", row_no DESC'
    )
    if options.skip_existing:
        conflict = "ON CONFLICT (tenant_id, email_lower) DO NOTHING"
    else:
        conflict = (
            "ON CONFLICT (tenant_id, email_lower) DO UPDATE SET "
            "name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE c.name END, "
            "attributes = c.attributes || excluded.attributes, updated_at = %s::timestamptz "
            "WHERE (excluded.name <> '' AND excluded.name <> c.name) "
            "OR NOT (c.attributes @> excluded.attributes)"
        )
    # No list: a CTE with no rows (a bare "SELECT 0" counted as one subscription).
    subscribe = "SELECT 1 WHERE false"
    params: list[Any] = [*key_params, str(tenant_id), *part.id_bases()]
    if not options.skip_existing:
        # NOTE: the transaction's now() as a value: Citus refuses a non-immutable
        # function in ON CONFLICT DO UPDATE on a distributed table.
        cursor.execute("SELECT now()")
        params.append(cursor.fetchone()[0])
    if options.list_id is not None:
        # Contacts this statement created or changed come back from RETURNING
        # in id order, so subscribing them needs no join (and appends to the
        # subscriptions indexes). With skip_existing, only the created ones.
        # A contact created by this statement has a new id that no subscription
        # holds yet (a subscription is written only for an existing contact), so
        # its rows are a plain INSERT: no arbiter-index probe and no speculative
        # insertion per row. Only contacts that existed before may meet one.
        insert = (
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status,"
            " consent_source, consent_at, confirmed_at)"
            " SELECT %s, %s, id, 'confirmed', 'import', now(), now() FROM merged"
        )
        subscribe = f"{insert} WHERE inserted RETURNING 1"
        params += [str(tenant_id), str(options.list_id)]
        if not options.skip_existing:
            subscribe = (
                f"{subscribe}), subscribed_existing AS ({insert} WHERE NOT inserted"
                " ON CONFLICT (tenant_id, list_id, contact_id) DO NOTHING RETURNING 1"
            )
            params += [str(tenant_id), str(options.list_id)]
    existing_count = ("(SELECT count(*) FROM subscribed_existing)"
                      if options.list_id is not None and not options.skip_existing else "0")
    counts = (
        f"subscribed AS ({subscribe}) "
        "SELECT (SELECT count(*) FILTER (WHERE inserted) FROM merged),"
        " (SELECT count(*) FILTER (WHERE NOT inserted) FROM merged),"
        f" (SELECT count(*) FROM src), (SELECT count(*) FROM subscribed) + {existing_count}"
    )
    head = f"WITH src AS MATERIALIZED ({source_sql}), "
    insert = (f"INSERT INTO contacts AS c (tenant_id, id, email, name, attributes)"
              f" SELECT %s, {ORDERED_UUID_SQL}, email, name, attributes FROM numbered")
    # NOTE: addresses the tenant does not have yet are a plain INSERT: no
    # arbiter probe and no speculative insertion per row (most of a first
    # import). Only the others go through ON CONFLICT. The two sets come from
    # one snapshot; a contact another transaction adds meanwhile makes the
    # plain INSERT fail, and the merge runs again all through ON CONFLICT.
    # NOTE: "merged" reads "known" first: each half probes the tenant's stored
    # contacts when it starts, and read after "fresh" the known half's probe
    # would walk every index entry and heap tuple fresh had just added (all
    # invisible to the statement's snapshot): about 1M of each for a 1M import.
    missing = ("NOT EXISTS (SELECT 1 FROM contacts e WHERE e.tenant_id = %s"
               " AND e.email_lower = lower(numbered.email))")
    split = (
        f"{head}numbered AS MATERIALIZED (SELECT *, row_number() OVER () AS n FROM src),"
        f" fresh AS ({insert} WHERE {missing} RETURNING id, true AS inserted),"
        f" known AS ({insert} WHERE NOT {missing} {conflict}"
        " RETURNING id, (xmax = 0) AS inserted),"
        " merged AS (SELECT * FROM known UNION ALL SELECT * FROM fresh), " + counts
    )
    tenant, bases = str(tenant_id), params[len(key_params) + 1:len(key_params) + 3]
    split_params = [*key_params, *params[len(key_params):len(key_params) + 3], tenant,
                    tenant, *bases, tenant, *params[len(key_params) + 3:]]
    # APPSEC: the tenant comes from tenant_tx, and WITH CHECK refuses any other.
    cursor.execute("SAVEPOINT import_merge")
    try:
        cursor.execute(split, split_params)
        created, updated, distinct, subscribed = cursor.fetchone()
    except psycopg2.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT import_merge")
        cursor.execute(
            f"{head}merged AS ({insert.replace(' FROM numbered', '')}"
            " FROM (SELECT *, row_number() OVER () AS n FROM src) numbered"
            f" {conflict} RETURNING id, (xmax = 0) AS inserted), " + counts,
            params,
        )
        created, updated, distinct, subscribed = cursor.fetchone()
    cursor.execute("RELEASE SAVEPOINT import_merge")
    return MergeCounts(created, updated, distinct, subscribed)


def _subscribe_unchanged(
    cursor: Any, tenant_id: uuid.UUID, options: ContactImportOptions, part: Part
) -> int:
    """Subscribe the file's existing contacts that the merge left unchanged."""
    # NOTE: now() is the transaction's start time: a contact this import
    # created or updated has updated_at = now(); the others are unchanged.
    cursor.execute(
        "WITH added AS ("
        " INSERT INTO subscriptions (tenant_id, list_id, contact_id, status, consent_source,"
        "  consent_at, confirmed_at)"
        " SELECT %s, %s, c.id, 'confirmed', 'import', now(), now()"
        f" FROM (SELECT DISTINCT lower(email) AS email_lower FROM {STAGE}"
        f" WHERE {part.where()}) s"
        " JOIN contacts c ON c.tenant_id = %s AND c.email_lower = s.email_lower"
        " AND c.updated_at <> now()"
        " ORDER BY c.id"
        " ON CONFLICT (tenant_id, list_id, contact_id) DO NOTHING RETURNING 1) "
        "SELECT count(*) FROM added",
        (str(tenant_id), str(options.list_id), str(tenant_id)),
    )
    return int(cursor.fetchone()[0])
