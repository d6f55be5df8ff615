"""``/v1/exports``: export contacts, suppressions or the message ledger as CSV.

``POST /v1/exports`` queues a job (``{"kind": "contacts", "list_id": ...}``);
``GET /v1/exports/{id}`` shows its progress; once it has succeeded,
``GET /v1/exports/{id}/download`` streams the CSV. Text cells that a
spreadsheet would run as a formula are prefixed with an apostrophe.
"""

from __future__ import annotations

from typing import Any

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, parse_uuid, read_body
from swiftmail_web.openapi import Operation, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import created
from swiftmail_web.resources.imports import JOB_SCHEMA, serialize

from swiftmail_core import jobs
from swiftmail_core.exports.queries import EXPORT_KINDS
from swiftmail_core.exports.service import create_export, open_export
from swiftmail_core.storage import Storage

FIELDS = Fields(
    kind=Field("string", required=True, enum=("contacts", "suppressions", "ledger")),
    list_id=Field("uuid", nullable=True, description="contacts: only this list's subscribers"),
    campaign_id=Field("uuid", nullable=True, description="ledger: only this campaign"),
)


def _serialize(job: jobs.JobRow) -> dict[str, Any]:
    return serialize(job, "export")


class ExportsResource:
    """``/v1/exports``: queue an export; list exports."""

    tag = "exports"
    # APPSEC: a viewer may follow exports but not make or download one.
    policy = {"GET": access.read("exports"), "POST": access.write("exports")}
    docs = {
        "GET": Operation("List exports", response=page_of(JOB_SCHEMA), paginated=True),
        "POST": Operation("Export contacts, suppressions or the ledger as CSV (a job)",
                          body=FIELDS, response=JOB_SCHEMA, status=202),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List export jobs."""
        record = jobs.JobRecord
        query = record.select().where(record.kind.in_(EXPORT_KINDS))
        resp.media = paginate(req, query, record.created_at, record.id,
                              lambda row: _serialize(row.to_row()))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Queue an export job."""
        values = FIELDS.parse(read_body(req))
        params: dict[str, Any] = {}
        if values["kind"] == "contacts" and values.get("list_id"):
            params["list"] = str(values["list_id"])
        if values["kind"] == "ledger" and values.get("campaign_id"):
            params["campaign"] = str(values["campaign_id"])
        job = create_export(f"export_{values['kind']}", params)
        created(resp, _serialize(job), f"/v1/exports/{job.id}")
        resp.status = 202


class ExportResource:
    """``GET /v1/exports/{export_id}``: status and progress."""

    tag = "exports"
    policy = {"GET": access.read("exports")}
    docs = {"GET": Operation("Get an export's status and progress", response=JOB_SCHEMA)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, export_id: str) -> None:
        """Return one export job (another tenant's is a 404)."""
        resp.media = _serialize(jobs.get_job(parse_uuid(export_id, "export"), EXPORT_KINDS))


class ExportDownloadResource:
    """``GET /v1/exports/{export_id}/download``: the CSV, streamed."""

    tag = "exports"
    policy = {"GET": access.write("exports")}
    docs = {"GET": Operation("Download a finished export as CSV",
                             response={"type": "string"}, response_type="text/csv")}

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def on_get(self, req: falcon.Request, resp: falcon.Response, export_id: str) -> None:
        """Stream the export file (409 until the job has succeeded)."""
        job, handle = open_export(self.storage, parse_uuid(export_id, "export"))
        resp.content_type = "text/csv; charset=utf-8"
        name = job.kind.removeprefix("export_")
        resp.set_header("Content-Disposition", f'attachment; filename="{name}-{job.id}.csv"')
        resp.stream = handle


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the export routes."""
    plugins = services["plugins"]
    return [
        ("/v1/exports", ExportsResource()),
        ("/v1/exports/{export_id}", ExportResource()),
        ("/v1/exports/{export_id}/download", ExportDownloadResource(plugins.storage())),
    ]
