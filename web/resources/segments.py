"""``/v1/segments``: saved conditions over contacts, their count and a preview.

A definition is JSON (docs/segments.md), checked when saved and compiled to
one parameterised statement; a tenant never supplies SQL.
"""

from __future__ import annotations

import uuid
from typing import Any

import falcon
from peewee import IntegrityError
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources import contacts
from swiftmail_web.resources.common import (
    INTEGER,
    OBJECT,
    STRING,
    TIMESTAMP,
    UUID,
    created,
    get_or_404,
    tenant_id,
)

from swiftmail_core.errors import ConflictError
from swiftmail_core.models import Contact, Segment, utcnow
from swiftmail_core.segments.definition import parse_definition
from swiftmail_core.segments.service import count_matching, matching_contacts

FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=200),
    definition=Field("object", required=True,
                     description="The condition, e.g. {\"all\": [{\"attribute\": \"plan\", "
                     "\"op\": \"eq\", \"value\": \"pro\"}]} (docs/segments.md)."),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "segment"}, "id": UUID, "name": STRING,
    "definition": OBJECT, "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
COUNT_SCHEMA = obj({"object": {"type": "string", "const": "segment_count"}, "id": UUID,
                    "count": INTEGER})


def serialize(row: Segment) -> dict[str, Any]:
    """Return the API shape of a segment."""
    return {"object": "segment", "id": row.id, "name": row.name, "definition": row.definition,
            "created_at": row.created_at, "updated_at": row.updated_at}


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    if "definition" in values:
        parse_definition(values["definition"])  # raises a 422 naming the bad part
    return values


def _conflict(values: dict[str, Any]) -> ConflictError:
    return ConflictError(f"a segment named {values.get('name')!r} already exists")


class SegmentsResource:
    """The collection: list and create."""

    tag = "segments"
    policy = {"GET": access.read("segments"), "POST": access.write("segments")}
    docs = {
        "GET": Operation("List segments", response=page_of(SCHEMA), paginated=True),
        "POST": Operation("Create a segment", body=FIELDS, response=SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List segments, oldest first."""
        resp.media = paginate(req, Segment.select(), Segment.created_at, Segment.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a segment; a bad definition is a 422 naming the part."""
        values = _checked(FIELDS.parse(read_body(req)))
        segment_id = uuid.uuid4()
        now = utcnow()
        try:
            Segment.insert(tenant_id=tenant_id(req), id=segment_id, created_at=now,
                           updated_at=now, **values).execute()
        except IntegrityError as ex:
            raise _conflict(values) from ex
        created(resp, serialize(Segment.get(Segment.id == segment_id)),
                f"/v1/segments/{segment_id}")


class SegmentResource:
    """One segment: read, update, delete."""

    tag = "segments"
    policy = {"GET": access.read("segments"), "PATCH": access.write("segments"),
              "DELETE": access.write("segments")}
    docs = {
        "GET": Operation("Get a segment", response=SCHEMA),
        "PATCH": Operation("Rename a segment or change its definition", body=FIELDS,
                           partial=True, response=SCHEMA),
        "DELETE": Operation("Delete a segment", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, segment_id: str) -> None:
        """Return one segment."""
        resp.media = serialize(get_or_404(Segment.select(), Segment.id, segment_id, "segment"))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, segment_id: str) -> None:
        """Change the name or the definition."""
        row = get_or_404(Segment.select().for_update(), Segment.id, segment_id, "segment")
        values = _checked(FIELDS.parse(read_body(req), partial=True))
        if values:
            try:
                Segment.update(updated_at=utcnow(), **values).where(
                    Segment.id == row.id).execute()
            except IntegrityError as ex:
                raise _conflict(values) from ex
        resp.media = serialize(Segment.get(Segment.id == row.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, segment_id: str) -> None:
        """Delete the segment (contacts stay)."""
        row = get_or_404(Segment.select(), Segment.id, segment_id, "segment")
        Segment.delete().where(Segment.id == row.id).execute()
        resp.status = 204


class SegmentCountResource:
    """``GET /v1/segments/{id}/count``: how many contacts match now."""

    tag = "segments"
    policy = {"GET": access.read("segments")}
    docs = {"GET": Operation("Count the contacts a segment matches", response=COUNT_SCHEMA)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, segment_id: str) -> None:
        """Count matching contacts with one statement."""
        row = get_or_404(Segment.select(), Segment.id, segment_id, "segment")
        resp.media = {"object": "segment_count", "id": row.id,
                      "count": count_matching(tenant_id(req), row.definition)}


class SegmentContactsResource:
    """``GET /v1/segments/{id}/contacts``: a page of the matching contacts (a preview)."""

    tag = "segments"
    policy = {"GET": access.read("segments")}
    docs = {"GET": Operation("List the contacts a segment matches",
                             response=page_of(contacts.SCHEMA), paginated=True)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, segment_id: str) -> None:
        """Return one page of matching contacts, oldest first."""
        row = get_or_404(Segment.select(), Segment.id, segment_id, "segment")
        resp.media = paginate(req, matching_contacts(tenant_id(req), row.definition),
                              Contact.created_at, Contact.id, contacts.serialize)


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the segments routes."""
    return [
        ("/v1/segments", SegmentsResource()),
        ("/v1/segments/{segment_id}", SegmentResource()),
        ("/v1/segments/{segment_id}/count", SegmentCountResource()),
        ("/v1/segments/{segment_id}/contacts", SegmentContactsResource()),
    ]
