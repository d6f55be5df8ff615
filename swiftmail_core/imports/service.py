"""Imports as jobs: store the upload, queue the job, run it, fetch its report.

Storage keys begin with the tenant id:
``<tenant>/imports/<job>/input`` (the upload, as sent, gzip or not) and
``<tenant>/imports/<job>/errors.csv`` (rejected rows, only if any).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from swiftmail_core import jobs
from swiftmail_core.db import current_tenant, is_distributed, tenant_tx
from swiftmail_core.errors import NotFoundError, TenantIsolationError, ValidationError
from swiftmail_core.imports import contacts as contact_import
from swiftmail_core.imports.contacts import ContactImportOptions, import_contacts, resolve_list
from swiftmail_core.imports.limits import ImportLimits
from swiftmail_core.imports.mapping import parse_map_options
from swiftmail_core.imports.report import ErrorReport
from swiftmail_core.imports.source import CsvSource
from swiftmail_core.imports.suppressions import SuppressionImportOptions, import_suppressions
from swiftmail_core.storage import Storage

if TYPE_CHECKING:
    from swiftmail_core.jobs import Runtime

IMPORT_KINDS = ("import_contacts", "import_suppressions")
COPY_CHUNK = 1 << 20
# Tests and operators may narrow the limits for this process.
DEFAULT_LIMITS = ImportLimits()


def input_key(tenant_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """Return the storage key of a job's uploaded file."""
    return f"{tenant_id}/imports/{job_id}/input"


def errors_key(tenant_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """Return the storage key of a job's error report."""
    return f"{tenant_id}/imports/{job_id}/errors.csv"


def _tenant() -> uuid.UUID:
    tenant = current_tenant()
    if tenant is None:
        raise TenantIsolationError("imports are created inside tenant_tx only")
    return tenant


def _text(field: str, value: Any, max_length: int = 1000) -> str:
    """Return ``value`` as text a database can store, or raise naming ``field``."""
    text = str(value)
    if "\x00" in text or len(text) > max_length:
        raise ValidationError.for_field(
            field, f"must be at most {max_length} characters, without NUL characters"
        )
    return text


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate import parameters; return them normalised (list resolved to its id)."""
    if kind not in IMPORT_KINDS:
        raise ValidationError.for_field("kind", f"must be one of {', '.join(IMPORT_KINDS)}")
    allowed = {"map", "filename"} | ({"list", "skip_existing"} if kind == "import_contacts" else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationError.for_field(unknown[0], "is not a parameter of this import")
    checked: dict[str, Any] = {
        "filename": str(params.get("filename") or "")[:255].replace("\x00", "")
    }
    mapping = params.get("map") or {}
    if isinstance(mapping, list | tuple):
        mapping = parse_map_options(_text("map", item) for item in mapping)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValidationError.for_field("map", "must be an object of column name to target")
    checked["map"] = {_text("map", key): _text("map", value) for key, value in mapping.items()}
    if kind == "import_contacts":
        skip = params.get("skip_existing", False)
        if not isinstance(skip, bool):
            raise ValidationError.for_field("skip_existing", "must be true or false")
        checked["skip_existing"] = skip
        list_ref = params.get("list")
        checked["list"] = str(resolve_list(_text("list", list_ref))) if list_ref else None
    return checked


def store_upload(
    storage: Storage, key: str, upload: BinaryIO, limits: ImportLimits = DEFAULT_LIMITS
) -> int:
    """Stream ``upload`` into storage under ``key``; return its size in bytes."""
    size = 0
    handle = storage.open_write(key)
    try:
        while chunk := upload.read(COPY_CHUNK):
            size += len(chunk)
            if size > limits.max_bytes:
                raise limits.too_big()
            handle.write(chunk)
    except BaseException:
        abort = getattr(handle, "abort", None)
        if abort is not None:
            abort()
        raise
    handle.close()
    if size == 0:
        storage.delete(key)
        raise ValidationError.for_field("file", "is empty: upload a CSV with a header row")
    return size


def create_import(
    storage: Storage, kind: str, upload: BinaryIO, params: dict[str, Any]
) -> jobs.JobRow:
    """Store the upload and queue an import job; call inside ``tenant_tx``."""
    tenant = _tenant()
    checked = check_params(kind, params)
    job_id = uuid.uuid4()
    key = input_key(tenant, job_id)
    size = store_upload(storage, key, upload)
    try:
        return jobs.create_job(
            kind, checked, input_key=key, progress_total=size, job_id=job_id
        )
    except BaseException:
        storage.delete(key)
        raise


def run_import(
    runtime: Runtime,
    job: jobs.JobRow,
    progress: jobs.Progress,
    *,
    raw: BinaryIO | None = None,
    limits: ImportLimits | None = None,
) -> None:
    """Run an import job: stream, validate, stage, merge and finish in one tenant_tx."""
    storage = runtime.plugins.storage()
    uploaded = raw is None
    if raw is None:
        if job.input_key is None:
            raise ValidationError.for_field("file", "this job has no uploaded file")
        raw = storage.open_read(job.input_key)
    limits = limits or DEFAULT_LIMITS
    report = ErrorReport(storage, errors_key(job.tenant_id, job.id))
    try:
        # NOTE: the exit stack closes (a partner connection commits) just before
        # tenant_tx commits, after the job is recorded as finished.
        with tenant_tx(job.tenant_id), contextlib.ExitStack() as commit_first:
            source = CsvSource(raw, limits, job.progress_total)
            if job.kind == "import_contacts":
                list_id = job.params.get("list")
                summary = import_contacts(
                    source, job.tenant_id,
                    ContactImportOptions(
                        list_id=uuid.UUID(list_id) if list_id else None,
                        mapping=dict(job.params.get("map") or {}),
                        skip_existing=bool(job.params.get("skip_existing")),
                        limits=limits,
                    ),
                    report, progress.update,
                    partners=commit_first if _merge_in_parts(job) else None,
                )
            else:
                summary = import_suppressions(
                    source, job.tenant_id,
                    SuppressionImportOptions(mapping=dict(job.params.get("map") or {}),
                                             limits=limits),
                    report, progress.update,
                )
            result = summary.as_result()
            result["errors_sample"] = report.samples
            result_key = report.close()
            jobs.finish_job(
                job.id, rows_ok=summary.rows_ok, rows_failed=summary.rows_failed,
                result=result, result_key=result_key, progress_done=source.bytes_read,
            )
    except BaseException:
        report.abort()
        raise
    finally:
        raw.close()
    if uploaded and job.input_key is not None:
        # NOTE: the upload holds personal data; once merged it is not kept.
        storage.delete(job.input_key)


def _merge_in_parts(job: jobs.JobRow) -> bool:
    """Whether this contacts import is big enough to merge on two connections."""
    # NOTE: not on Citus: its distributed deadlock detection is not shown to
    # see a cycle through the coordinator's advisory locks (imports.partner).
    return (job.progress_total or 0) >= contact_import.PARTNER_MIN_BYTES and not is_distributed()


def import_file(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    kind: str,
    path: Path,
    params: dict[str, Any],
    listener: Callable[[int, int | None], None] | None = None,
    limits: ImportLimits | None = None,
) -> jobs.JobRow:
    """Import a local file now, recorded as a job (the CLI's path); return the job.

    The file is read in place, not copied to storage; the job row is created
    already running with this process's lease so no runner takes it.
    """
    size = path.stat().st_size
    with tenant_tx(tenant_id):
        checked = check_params(kind, {**params, "filename": path.name})
        job = jobs.create_job(kind, checked, progress_total=size, run_inline=True)
    progress = jobs.Progress(tenant_id, job.id, size, listener)
    try:
        with path.open("rb") as raw, jobs.heartbeat(tenant_id, job.id):
            run_import(runtime, job, progress, raw=raw, limits=limits)
    except ValidationError as ex:
        jobs.fail_job(tenant_id, job.id, ex.detail)
        raise
    except BaseException as ex:
        jobs.fail_job(tenant_id, job.id, f"interrupted ({type(ex).__name__})")
        raise
    return jobs.load_job(tenant_id, job.id)


def open_error_report(storage: Storage, job_id: uuid.UUID | str) -> BinaryIO:
    """Open the current tenant's import error report; call inside ``tenant_tx``."""
    job = jobs.get_job(job_id, IMPORT_KINDS)
    if job.result_key is None:
        raise NotFoundError(f"import {job.id} has no error report (no row was rejected)")
    # APPSEC: the key comes from the tenant's own job row, never from the request.
    return storage.open_read(job.result_key)


jobs.register_handler("import_contacts", run_import)
jobs.register_handler("import_suppressions", run_import)
