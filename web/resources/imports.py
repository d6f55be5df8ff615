"""``/v1/imports``: upload a CSV (or gzip) of contacts or suppressions; follow the job.

The file is the request body itself (``Content-Type: text/csv`` or
``application/gzip``), streamed into storage; options are query parameters.
The import runs as a job: ``GET /v1/imports/{id}`` shows status, progress
(bytes of the file read) and counts; ``GET /v1/imports/{id}/errors`` streams
the per-row error report.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import parse_uuid
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    INTEGER,
    NULLABLE_TIMESTAMP,
    OBJECT,
    STRING,
    TIMESTAMP,
    UUID,
    created,
)

from swiftmail_core import jobs
from swiftmail_core.errors import ValidationError
from swiftmail_core.imports.service import (
    DEFAULT_LIMITS,
    IMPORT_KINDS,
    create_import,
    open_error_report,
)
from swiftmail_core.storage import Storage

UPLOAD_TYPES = ("text/csv", "application/csv", "text/plain", "application/gzip",
                "application/x-gzip", "application/octet-stream")
JOB_SCHEMA = obj({
    "object": STRING, "id": UUID, "kind": STRING,
    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed",
                                          "cancelled"]},
    "params": OBJECT,
    "progress": obj({"done": INTEGER, "total": {"type": ["integer", "null"]}}),
    "rows_ok": INTEGER, "rows_failed": INTEGER, "result": OBJECT,
    "error": {"type": ["string", "null"]}, "has_result_file": {"type": "boolean"},
    "created_at": TIMESTAMP, "started_at": NULLABLE_TIMESTAMP, "finished_at": NULLABLE_TIMESTAMP,
})
UPLOAD_BODY = {"type": "string", "format": "binary",
               "description": "The CSV file (UTF-8, header row first), plain or gzip."}
MAP_PARAMETER = {
    "name": "map", "in": "query", "required": False,
    "description": "COLUMN=TARGET, repeatable; TARGET is a field, attributes.KEY, or - to ignore",
    "schema": {"type": "array", "items": STRING}, "style": "form", "explode": True,
}
CONTACT_PARAMETERS = (
    {"name": "list", "in": "query", "required": False, "schema": STRING,
     "description": "Subscribe imported contacts to this list (id or name)."},
    MAP_PARAMETER,
    {"name": "skip_existing", "in": "query", "required": False,
     "schema": {"type": "boolean", "default": False}},
)

#: An upload's stored size may reach the decompressed limit (an uncompressed CSV).
UPLOAD_LIMIT = DEFAULT_LIMITS.max_bytes


def serialize(job: jobs.JobRow, noun: str = "import") -> dict[str, Any]:
    """Return the API shape of an import (or export) job."""
    return {"object": noun, **job.to_dict()}


def upload_stream(req: falcon.Request) -> BinaryIO:
    """Return the request body as a stream, checking its type and size.

    NOTE: with an ``Idempotency-Key`` the middleware has already read the
    body to hash it; then it is served from memory.
    """
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type not in UPLOAD_TYPES:
        raise ValidationError.for_field(
            "Content-Type",
            "send the CSV file itself as the body, as text/csv or application/gzip",
        )
    from swiftmail_core.imports.service import DEFAULT_LIMITS

    if req.content_length is not None and req.content_length > DEFAULT_LIMITS.max_bytes:
        raise DEFAULT_LIMITS.too_big()
    spooled = getattr(req.context, "body_file", None)
    if spooled is not None:  # already read (and hashed) by the idempotency middleware
        return spooled
    return req.bounded_stream  # type: ignore[return-value]


def _bool_param(req: falcon.Request, name: str) -> bool:
    raw = req.get_param(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError.for_field(name, "must be true or false")


class ContactImportsResource:
    """``POST /v1/imports/contacts``: upload a contacts CSV."""

    tag = "imports"
    max_body_bytes = UPLOAD_LIMIT  # the CSV file itself (gzip allowed)
    policy = {"POST": access.write("imports")}
    docs = {"POST": Operation(
        "Import contacts from a CSV (or gzip) body; runs as a job", body_schema=UPLOAD_BODY,
        request_type="text/csv", response=JOB_SCHEMA, status=202, query=CONTACT_PARAMETERS,
    )}

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store the file and queue the import."""
        params: dict[str, Any] = {
            "map": req.get_param_as_list("map") or [],
            "skip_existing": _bool_param(req, "skip_existing"),
            "list": req.get_param("list"),
        }
        job = create_import(self.storage, "import_contacts", upload_stream(req), params)
        created(resp, serialize(job), f"/v1/imports/{job.id}")
        resp.status = 202


class SuppressionImportsResource:
    """``POST /v1/imports/suppressions``: upload a suppressions CSV."""

    tag = "imports"
    max_body_bytes = UPLOAD_LIMIT  # the CSV file itself (gzip allowed)
    policy = {"POST": access.write("imports")}
    docs = {"POST": Operation(
        "Import suppressions (email, reason, detail) from a CSV body; runs as a job",
        body_schema=UPLOAD_BODY, request_type="text/csv", response=JOB_SCHEMA, status=202,
        query=(MAP_PARAMETER,),
    )}

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store the file and queue the import."""
        params = {"map": req.get_param_as_list("map") or []}
        job = create_import(self.storage, "import_suppressions", upload_stream(req), params)
        created(resp, serialize(job), f"/v1/imports/{job.id}")
        resp.status = 202


class ImportsResource:
    """``GET /v1/imports``: the tenant's imports, newest last."""

    tag = "imports"
    policy = {"GET": access.read("imports")}
    docs = {"GET": Operation("List imports", response=page_of(JOB_SCHEMA), paginated=True)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List import jobs."""
        record = jobs.JobRecord
        query = record.select().where(record.kind.in_(IMPORT_KINDS))
        resp.media = paginate(req, query, record.created_at, record.id,
                              lambda row: serialize(row.to_row()))


class ImportResource:
    """``GET /v1/imports/{import_id}``: status, progress and counts."""

    tag = "imports"
    policy = {"GET": access.read("imports")}
    docs = {"GET": Operation("Get an import's status and progress", response=JOB_SCHEMA)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, import_id: str) -> None:
        """Return one import job (another tenant's is a 404)."""
        resp.media = serialize(jobs.get_job(parse_uuid(import_id, "import"), IMPORT_KINDS))


class ImportErrorsResource:
    """``GET /v1/imports/{import_id}/errors``: the rejected rows, as CSV."""

    tag = "imports"
    # The report repeats rejected cells from the upload: writers only.
    policy = {"GET": access.write("imports")}
    docs = {"GET": Operation("Download an import's error report (row, reason, value)",
                             response={"type": "string"}, response_type="text/csv")}

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def on_get(self, req: falcon.Request, resp: falcon.Response, import_id: str) -> None:
        """Stream the error report."""
        handle = open_error_report(self.storage, parse_uuid(import_id, "import"))
        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header("Content-Disposition", f'attachment; filename="import-{import_id}-errors.csv"')
        resp.stream = handle


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the import routes."""
    plugins = services["plugins"]
    storage = plugins.storage()
    return [
        ("/v1/imports", ImportsResource()),
        ("/v1/imports/contacts", ContactImportsResource(storage)),
        ("/v1/imports/suppressions", SuppressionImportsResource(storage)),
        ("/v1/imports/{import_id}", ImportResource()),
        ("/v1/imports/{import_id}/errors", ImportErrorsResource(storage)),
    ]
