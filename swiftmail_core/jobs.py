"""Background jobs (imports, exports): rows in ``jobs``, claimed and run.

The job row in PostgreSQL is the truth; a huey task only wakes a runner.

How a job runs:

1. An API call or the CLI inserts the row (``create_job``, inside the
   caller's ``tenant_tx``), status ``queued``.
2. ``run_pending_jobs(runtime, limit)`` claims due rows as the system role,
   tenant by tenant through the due-tenant hints (``swiftmail_core.due_tenants``,
   queue ``jobs``; ``FOR UPDATE SKIP LOCKED`` within one tenant, status
   ``running``, a lease, ``attempts + 1``).
   A ``running`` row whose lease expired (its runner died) is claimed again,
   up to ``MAX_ATTEMPTS``, then failed. Imports and exports are idempotent,
   so running one twice is safe.
3. The kind's handler does the work inside ``tenant_tx(job.tenant_id)`` (so
   row-level security applies) and calls ``finish_job`` in that same
   transaction: the data and the job's outcome commit together.
4. Progress goes through ``Progress``, which writes ``progress_done`` on its
   own short system-role transaction (throttled) and renews the lease, so it
   is visible while the long tenant transaction is still open.

The campaign worker's periodic huey task calls ``run_pending_jobs``;
``swiftmail jobs run`` does the same from the command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from peewee import IntegerField, TextField
from playhouse.postgres_ext import BinaryJSONField

from swiftmail_core.db import app_db, current_tenant, system_tx
from swiftmail_core.due_tenants import DueQueue
from swiftmail_core.errors import NotFoundError, SwiftMailError, TenantIsolationError
from swiftmail_core.models import Job
from swiftmail_core.timestamps import rfc3339

if TYPE_CHECKING:
    from swiftmail_core.plugins import PluginManager

LEASE_SECONDS = 300
MAX_ATTEMPTS = 3
PROGRESS_INTERVAL_SECONDS = 0.5
JOB_KINDS = (
    "import_contacts", "import_suppressions",
    "export_contacts", "export_suppressions", "export_ledger", "export_stats",
)

log = structlog.get_logger(__name__)
#: Tenants with jobs to run (or to run again after their runner died).
JOBS = DueQueue(
    "jobs",
    due_sql="SELECT tenant_id, min(CASE WHEN status = 'queued' THEN created_at "
            "ELSE lease_expires_at END) FROM jobs WHERE status = 'queued' "
            "OR (status = 'running' AND lease_expires_at < now()) GROUP BY tenant_id",
    next_due_sql="SELECT min(CASE WHEN status = 'queued' THEN created_at "
                 "ELSE lease_expires_at END) "
                 "FROM jobs WHERE tenant_id = %(tenant)s AND status IN ('queued', 'running')",
)

_COLUMNS = (
    "tenant_id, id, kind, status, params, progress_done, progress_total, rows_ok, "
    "rows_failed, input_key, result_key, error, result, attempts, created_at, started_at, "
    "finished_at"
)


@dataclasses.dataclass(frozen=True)
class JobRow:
    """One job as stored."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    kind: str
    status: str
    params: dict[str, Any]
    progress_done: int
    progress_total: int | None
    rows_ok: int
    rows_failed: int
    input_key: str | None
    result_key: str | None
    error: str | None
    result: dict[str, Any]
    attempts: int
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> JobRow:
        """Build from a row selected with the standard column list."""
        values = list(row)
        values[0] = uuid.UUID(str(values[0]))
        values[1] = uuid.UUID(str(values[1]))
        return cls(*values)

    def to_dict(self) -> dict[str, Any]:
        """Return the public JSON shape (no storage keys, no tenant id)."""
        def iso(value: datetime.datetime | None) -> str | None:
            return rfc3339(value) if value else None

        return {
            "id": str(self.id),
            "kind": self.kind,
            "status": self.status,
            "params": self.params,
            "progress": {"done": self.progress_done, "total": self.progress_total},
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "result": self.result,
            "error": self.error,
            "has_result_file": self.result_key is not None,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


class JobRecord(Job):
    """The ``jobs`` table with the runner's columns (migration 0030), for listings."""

    attempts = IntegerField(default=0)
    lease_owner = TextField(null=True)
    result = BinaryJSONField(default=dict)

    class Meta:
        table_name = "jobs"

    def to_row(self) -> JobRow:
        """Return the record as a JobRow."""
        return JobRow(
            self.tenant_id, self.id, self.kind, self.status, self.params, self.progress_done,
            self.progress_total, self.rows_ok, self.rows_failed, self.input_key,
            self.result_key, self.error, self.result, self.attempts, self.created_at,
            self.started_at, self.finished_at,
        )


class Runtime(Protocol):
    """What job handlers need of the process: its plugins (a Runtime has them)."""

    plugins: PluginManager


Handler = Callable[[Runtime, JobRow, "Progress"], None]
_HANDLERS: dict[str, Handler] = {}


def register_handler(kind: str, handler: Handler) -> None:
    """Make ``handler`` run jobs of ``kind``."""
    _HANDLERS[kind] = handler


def _handlers() -> dict[str, Handler]:
    # NOTE: importing the services registers their handlers.
    import swiftmail_core.exports.service
    import swiftmail_core.imports.service  # noqa: F401

    return _HANDLERS


def _require_tenant() -> uuid.UUID:
    tenant = current_tenant()
    if tenant is None:
        raise TenantIsolationError("job rows are read and written inside tenant_tx only")
    return tenant


def runner_name() -> str:
    """Return this process's lease owner name (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Inside the caller's tenant_tx --------------------------------------------------


def create_job(
    kind: str,
    params: dict[str, Any],
    *,
    input_key: str | None = None,
    progress_total: int | None = None,
    job_id: uuid.UUID | None = None,
    run_inline: bool = False,
) -> JobRow:
    """Insert a job for the current tenant; return it.

    ``run_inline`` creates it already ``running`` with a lease held by this
    process (the CLI runs it at once), so no runner claims it meanwhile.
    """
    tenant = _require_tenant()
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job_id = job_id or uuid.uuid4()
    status, lease, owner, attempts = "queued", None, None, 0
    started = None
    if run_inline:
        status, owner, attempts = "running", runner_name(), 1
        lease = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=LEASE_SECONDS)
        started = datetime.datetime.now(datetime.UTC)
    row = app_db.execute_sql(
        f"INSERT INTO jobs (tenant_id, id, kind, status, params, input_key, progress_total, "
        f"lease_expires_at, lease_owner, attempts, started_at) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (str(tenant), str(job_id), kind, status, json.dumps(params), input_key,
         progress_total, lease, owner, attempts, started),
    ).fetchone()
    if not run_inline:
        JOBS.mark_due(app_db, tenant)  # runners start from the due tenants
    return JobRow.from_row(row)


def get_job(job_id: uuid.UUID | str, kinds: tuple[str, ...] = JOB_KINDS) -> JobRow:
    """Return the current tenant's job, or raise NotFoundError."""
    tenant = _require_tenant()
    try:
        parsed = uuid.UUID(str(job_id))
    except ValueError as ex:
        raise NotFoundError(f"no job {job_id!r}") from ex
    # APPSEC: RLS limits this to the current tenant; another tenant's job is a 404.
    row = app_db.execute_sql(
        f"SELECT {_COLUMNS} FROM jobs WHERE tenant_id = %s AND id = %s AND kind = ANY(%s)",
        (str(tenant), str(parsed), list(kinds)),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id}")
    return JobRow.from_row(row)


def list_jobs(
    kinds: tuple[str, ...], *, limit: int = 20, starting_after: uuid.UUID | None = None
) -> list[JobRow]:
    """Return the current tenant's jobs of ``kinds``, newest first."""
    tenant = str(_require_tenant())
    params: list[Any] = [tenant, list(kinds)]
    where = "tenant_id = %s AND kind = ANY(%s)"
    if starting_after is not None:
        where += (" AND (created_at, id) < (SELECT created_at, id FROM jobs "
                  "WHERE tenant_id = %s AND id = %s)")
        params += [tenant, str(starting_after)]
    params.append(limit)
    rows = app_db.execute_sql(
        f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s",
        params,
    ).fetchall()
    return [JobRow.from_row(row) for row in rows]


def finish_job(
    job_id: uuid.UUID,
    *,
    rows_ok: int,
    rows_failed: int,
    result: dict[str, Any],
    result_key: str | None,
    progress_done: int | None = None,
) -> None:
    """Mark the job succeeded, in the tenant transaction that did its work."""
    tenant = _require_tenant()
    app_db.execute_sql(
        "UPDATE jobs SET status = 'succeeded', rows_ok = %s, rows_failed = %s, result = %s, "
        "result_key = %s, progress_done = coalesce(%s, progress_done), error = NULL, "
        "lease_expires_at = NULL, finished_at = now() WHERE tenant_id = %s AND id = %s",
        (rows_ok, rows_failed, json.dumps(result), result_key, progress_done, str(tenant),
         str(job_id)),
    )


# System role: claims, progress, failures -----------------------------------------


def claim_jobs(limit: int, *, owner: str | None = None) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Claim up to ``limit`` due jobs, tenant by tenant (fairly); return (tenant_id, id) pairs."""
    owner = owner or runner_name()
    claimed = JOBS.claim_fairly(limit, lambda tenant, room: _claim_tenant(tenant, room, owner))
    return [(uuid.UUID(str(tenant)), uuid.UUID(str(job))) for tenant, job in claimed]


def _claim_tenant(tenant: str, limit: int, owner: str) -> tuple[list[tuple[Any, Any]], bool]:
    """Lease up to ``limit`` of one tenant's due jobs; return them and whether it has more.

    Every statement names the tenant (a single-shard transaction on Citus).
    A job interrupted ``MAX_ATTEMPTS`` times is failed instead of claimed.
    """
    with system_tx() as system:
        # NOTE: now() read once: Citus refuses a non-immutable function inside COALESCE.
        (now,) = system.execute_sql("SELECT now()").fetchone()
        system.execute_sql(
            "UPDATE jobs SET status = 'failed', finished_at = now(), lease_expires_at = NULL, "
            "error = 'the job was interrupted ' || attempts || ' times and was abandoned' "
            "WHERE tenant_id = %s AND status = 'running' AND lease_expires_at < now() "
            "AND attempts >= %s",
            (tenant, MAX_ATTEMPTS),
        )
        # NOTE: two statements, the rows locked by the first: an UPDATE ... WHERE id IN
        # (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) may re-run its subquery and lease
        # more than n rows (seen: 2-3 for a limit of 1; the extra ones sat "running").
        picked = [row[0] for row in system.execute_sql(
            "SELECT id FROM jobs WHERE tenant_id = %s"
            " AND (status = 'queued' OR (status = 'running' AND lease_expires_at < now()))"
            " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (tenant, limit),
        ).fetchall()]
        rows = system.execute_sql(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = %s, "
            "lease_expires_at = now() + make_interval(secs => %s), "
            "started_at = coalesce(started_at, %s) "
            "WHERE tenant_id = %s AND id = ANY (%s::uuid[]) "
            "RETURNING tenant_id, id",
            (owner, LEASE_SECONDS, now, tenant, [str(job) for job in picked]),
        ).fetchall() if picked else []
        more = len(rows) == limit
        if not more:
            JOBS.settle_within(system, tenant)
    return list(rows), more


def fail_job(tenant_id: uuid.UUID, job_id: uuid.UUID, error: str) -> None:
    """Mark a job failed with a message a person can act on."""
    with system_tx() as system:
        system.execute_sql(
            "UPDATE jobs SET status = 'failed', error = %s, finished_at = now(), "
            "lease_expires_at = NULL WHERE tenant_id = %s AND id = %s AND status = 'running'",
            (error[:2000], str(tenant_id), str(job_id)),
        )


class Progress:
    """Report a running job's progress; throttled writes that renew the lease.

    Writes go through their own short system-role transaction, so they are
    visible while the job's tenant transaction is still open. ``listener``
    (the CLI's progress bar) hears every update.
    """

    def __init__(
        self,
        tenant_id: uuid.UUID,
        job_id: uuid.UUID,
        total: int | None = None,
        listener: Callable[[int, int | None], None] | None = None,
        interval: float = PROGRESS_INTERVAL_SECONDS,
    ) -> None:
        self.tenant_id = tenant_id
        self.job_id = job_id
        self.total = total
        self.done = 0
        self.listener = listener
        self.interval = interval
        self._written_at = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        """Record ``done`` units (bytes of input or output)."""
        self.done = done
        if self.listener is not None:
            self.listener(done, self.total)
        now = time.monotonic()
        if force or now - self._written_at >= self.interval:
            self._written_at = now
            self._write()

    def _write(self) -> None:
        with system_tx() as system:
            system.execute_sql(
                "UPDATE jobs SET progress_done = %s, progress_total = coalesce(%s, progress_total),"
                " lease_expires_at = now() + make_interval(secs => %s) "
                "WHERE tenant_id = %s AND id = %s AND status = 'running'",
                (self.done, self.total, LEASE_SECONDS, str(self.tenant_id), str(self.job_id)),
            )


def renew_lease(tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Extend a running job's lease by LEASE_SECONDS from now."""
    with system_tx() as system:
        system.execute_sql(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s) "
            "WHERE tenant_id = %s AND id = %s AND status = 'running'",
            (LEASE_SECONDS, str(tenant_id), str(job_id)),
        )


@contextmanager
def heartbeat(tenant_id: uuid.UUID, job_id: uuid.UUID) -> Iterator[None]:
    """Keep renewing the job's lease from a side thread while the block runs.

    Progress updates renew it too, but a long set-based merge reports none.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(LEASE_SECONDS / 3):
            try:
                renew_lease(tenant_id, job_id)
            except Exception:
                log.exception("could not renew a job lease", job_id=str(job_id))

    thread = threading.Thread(target=beat, name=f"job-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_job(tenant_id: uuid.UUID, job_id: uuid.UUID) -> JobRow:
    """Read one job as the system role (the runner, before it enters tenant_tx)."""
    with system_tx() as system:
        row = system.execute_sql(
            f"SELECT {_COLUMNS} FROM jobs WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), str(job_id)),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id}")
    return JobRow.from_row(row)


def run_job(
    runtime: Runtime,
    job: JobRow,
    listener: Callable[[int, int | None], None] | None = None,
) -> JobRow:
    """Run one claimed job with its kind's handler; record failure; return it after."""
    handler = _handlers().get(job.kind)
    if handler is None:
        fail_job(job.tenant_id, job.id, f"no handler for jobs of kind {job.kind!r}")
        return load_job(job.tenant_id, job.id)
    progress = Progress(job.tenant_id, job.id, job.progress_total, listener)
    try:
        with heartbeat(job.tenant_id, job.id):
            handler(runtime, job, progress)
    except SwiftMailError as ex:
        fail_job(job.tenant_id, job.id, ex.detail)
    except Exception as ex:
        log.exception("job failed", job_id=str(job.id), tenant_id=str(job.tenant_id))
        fail_job(job.tenant_id, job.id, f"internal error ({type(ex).__name__}); see the logs")
    return load_job(job.tenant_id, job.id)


def run_pending_jobs(runtime: Runtime, limit: int = 10) -> int:
    """Claim and run up to ``limit`` due jobs, one after another; return how many ran.

    Safe to call from many processes at once (claims skip locked rows). The
    campaign worker's periodic huey task calls this; ``runtime`` may be a
    ``swiftmail_core.runtime.Runtime`` or anything with ``.plugins``.
    """
    ran = 0
    # NOTE: claim one at a time, so a job never waits behind another with
    # its lease already ticking.
    while ran < limit:
        claimed = claim_jobs(1)
        if not claimed:
            break
        tenant_id, job_id = claimed[0]
        run_job(runtime, load_job(tenant_id, job_id))
        ran += 1
    return ran
