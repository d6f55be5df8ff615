"""Exports as jobs: queue, run (COPY TO into storage), download as a stream.

Storage key: ``<tenant>/exports/<job>/<kind>.csv``. The CSV has a header,
timestamps in UTC, and formula-escaped text cells.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from swiftmail_core import jobs
from swiftmail_core.db import app_db, current_tenant, tenant_tx
from swiftmail_core.errors import (
    ConflictError,
    NotFoundError,
    TenantIsolationError,
    ValidationError,
)
from swiftmail_core.exports.queries import (
    EXPORT_KINDS,
    contacts_query,
    ledger_query,
    suppressions_query,
)
from swiftmail_core.storage import Storage

if TYPE_CHECKING:
    from swiftmail_core.jobs import Runtime

PROGRESS_EVERY_WRITES = 2000
DOWNLOAD_CHUNK = 1 << 16


def export_key(tenant_id: uuid.UUID, job_id: uuid.UUID, kind: str) -> str:
    """Return the storage key of an export's CSV."""
    return f"{tenant_id}/exports/{job_id}/{kind.removeprefix('export_')}.csv"


def _uuid_param(params: dict[str, Any], name: str) -> uuid.UUID | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError as ex:
        raise ValidationError.for_field(name, "must be a UUID") from ex


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate export parameters inside ``tenant_tx``; return them normalised."""
    if current_tenant() is None:
        raise TenantIsolationError("exports are created inside tenant_tx only")
    if kind not in EXPORT_KINDS:
        raise ValidationError.for_field("kind", f"must be one of {', '.join(EXPORT_KINDS)}")
    allowed = {"export_contacts": {"list"}, "export_suppressions": set(),
               "export_ledger": {"campaign"}}[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationError.for_field(unknown[0], "is not a parameter of this export")
    checked: dict[str, Any] = {}
    # APPSEC: RLS scopes these lookups; another tenant's id is "not found".
    tenant = str(current_tenant())
    if kind == "export_contacts" and (list_id := _uuid_param(params, "list")):
        if app_db.execute_sql("SELECT 1 FROM lists WHERE tenant_id = %s AND id = %s",
                              (tenant, str(list_id))).fetchone() is None:
            raise NotFoundError(f"no list {list_id}")
        checked["list"] = str(list_id)
    if kind == "export_ledger" and (campaign_id := _uuid_param(params, "campaign")):
        found = app_db.execute_sql(
            "SELECT 1 FROM campaigns WHERE tenant_id = %s AND id = %s", (tenant, str(campaign_id))
        ).fetchone()
        if found is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        checked["campaign"] = str(campaign_id)
    return checked


def create_export(kind: str, params: dict[str, Any]) -> jobs.JobRow:
    """Queue an export job; call inside ``tenant_tx``."""
    return jobs.create_job(kind, check_params(kind, params))


class _CountingWriter:
    """Pass COPY's output to storage, counting bytes and reporting progress."""

    def __init__(self, handle: BinaryIO, progress: jobs.Progress) -> None:
        self.handle = handle
        self.progress = progress
        self.count = 0
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.handle.write(data)
        self.count += len(data)
        self.writes += 1
        if self.writes % PROGRESS_EVERY_WRITES == 0:
            self.progress.update(self.count)
        return len(data)


def run_export(runtime: Runtime, job: jobs.JobRow, progress: jobs.Progress) -> None:
    """Run an export job: COPY the tenant's rows into storage, then finish."""
    storage = runtime.plugins.storage()
    key = export_key(job.tenant_id, job.id, job.kind)
    with tenant_tx(job.tenant_id):
        cursor = app_db.cursor()
        cursor.execute("SET LOCAL TimeZone = 'UTC'")
        if job.kind == "export_contacts":
            list_id = job.params.get("list")
            query = contacts_query(cursor, job.tenant_id,
                                   uuid.UUID(list_id) if list_id else None)
        elif job.kind == "export_suppressions":
            query = suppressions_query(cursor, job.tenant_id)
        else:
            campaign_id = job.params.get("campaign")
            query = ledger_query(cursor, job.tenant_id,
                                 uuid.UUID(campaign_id) if campaign_id else None)
        handle = storage.open_write(key)
        writer = _CountingWriter(handle, progress)
        try:
            cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)", writer)
        except BaseException:
            abort = getattr(handle, "abort", None)
            if abort is not None:
                abort()
            raise
        handle.close()
        rows = max(cursor.rowcount, 0)
        progress.update(writer.count, force=True)
        jobs.finish_job(
            job.id, rows_ok=rows, rows_failed=0, result={"rows": rows, "bytes": writer.count},
            result_key=key, progress_done=writer.count,
        )


def export_now(
    runtime: Runtime, tenant_id: uuid.UUID, kind: str, params: dict[str, Any]
) -> jobs.JobRow:
    """Run an export at once, recorded as a job (the CLI's path); return the job."""
    with tenant_tx(tenant_id):
        job = jobs.create_job(kind, check_params(kind, params), run_inline=True)
    return jobs.run_job(runtime, job)


def open_export(storage: Storage, job_id: uuid.UUID | str) -> tuple[jobs.JobRow, BinaryIO]:
    """Open the current tenant's finished export; call inside ``tenant_tx``."""
    job = jobs.get_job(job_id, EXPORT_KINDS)
    if job.status != "succeeded" or job.result_key is None:
        raise ConflictError(f"export {job.id} is {job.status}; download it once it has succeeded")
    # APPSEC: the key comes from the tenant's own job row, never from the request.
    return job, storage.open_read(job.result_key)


def copy_to_path(storage: Storage, key: str, path: Path) -> int:
    """Copy a stored file to a local path; return bytes copied."""
    copied = 0
    with storage.open_read(key) as source, path.open("wb") as target:
        while chunk := source.read(DOWNLOAD_CHUNK):
            target.write(chunk)
            copied += len(chunk)
    return copied


jobs.register_handler("export_contacts", run_export)
jobs.register_handler("export_suppressions", run_export)
jobs.register_handler("export_ledger", run_export)
