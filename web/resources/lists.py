"""``/v1/lists``: mailing lists (CRUD) with subscriber counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, cast

import falcon
from peewee import IntegrityError, fn
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIMESTAMP,
    UUID,
    created,
    get_or_404,
    tenant_id,
)

from swiftmail_core import parent_rows
from swiftmail_core.errors import ConflictError
from swiftmail_core.models import MailingList, Subscription, utcnow

FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=200),
    description=Field("string", max_length=2000),
    double_opt_in=Field("boolean", description="Subscribers must confirm by email."),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "list"}, "id": UUID, "name": STRING,
    "description": STRING, "double_opt_in": BOOLEAN, "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
})
ITEM_SCHEMA = obj({**SCHEMA["properties"], "counts": obj({
    "unconfirmed": INTEGER, "confirmed": INTEGER, "unsubscribed": INTEGER})})


def serialize(row: MailingList) -> dict[str, Any]:
    """Return the API shape of a list."""
    return {"object": "list", "id": row.id, "name": row.name, "description": row.description,
            "double_opt_in": row.double_opt_in, "created_at": row.created_at,
            "updated_at": row.updated_at}


def _counts(list_id: uuid.UUID) -> dict[str, int]:
    counts = {"unconfirmed": 0, "confirmed": 0, "unsubscribed": 0}
    query = (Subscription.select(Subscription.status, fn.COUNT(Subscription.contact_id))
             .where(Subscription.list_id == list_id).group_by(Subscription.status).tuples())
    rows = cast(Iterable[tuple[str, int]], query)
    for status, count in rows:
        counts[status] = int(count)
    return counts


def _conflict(values: dict[str, Any]) -> ConflictError:
    return ConflictError(f"a list named {values.get('name')!r} already exists")


class ListsResource:
    """The collection: list and create."""

    tag = "lists"
    policy = {"GET": access.read("lists"), "POST": access.write("lists")}
    docs = {
        "GET": Operation("List mailing lists", response=page_of(SCHEMA), paginated=True),
        "POST": Operation("Create a mailing list", body=FIELDS, response=SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List lists, oldest first."""
        resp.media = paginate(req, MailingList.select(), MailingList.created_at, MailingList.id,
                              serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a list; a duplicate name is a 409."""
        values = FIELDS.parse(read_body(req))
        list_id = uuid.uuid4()
        now = utcnow()
        try:
            MailingList.insert(tenant_id=tenant_id(req), id=list_id, created_at=now,
                               updated_at=now, **values).execute()
        except IntegrityError as ex:
            raise _conflict(values) from ex
        created(resp, serialize(MailingList.get(MailingList.id == list_id)),
                f"/v1/lists/{list_id}")


class ListResource:
    """One list: read (with counts), update, delete."""

    tag = "lists"
    policy = {"GET": access.read("lists"), "PATCH": access.write("lists"),
              "DELETE": access.write("lists", role="admin")}
    docs = {
        "GET": Operation("Get a list with subscriber counts", response=ITEM_SCHEMA),
        "PATCH": Operation("Update a list", body=FIELDS, partial=True, response=SCHEMA),
        "DELETE": Operation("Delete a list and its subscriptions", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, list_id: str) -> None:
        """Return one list and its counts by subscription status."""
        row = get_or_404(MailingList.select(), MailingList.id, list_id, "list")
        resp.media = {**serialize(row), "counts": _counts(row.id)}

    def on_patch(self, req: falcon.Request, resp: falcon.Response, list_id: str) -> None:
        """Rename, describe or switch double opt-in."""
        row = get_or_404(MailingList.select().for_update(), MailingList.id, list_id, "list")
        values = FIELDS.parse(read_body(req), partial=True)
        if values:
            try:
                MailingList.update(updated_at=utcnow(), **values).where(
                    MailingList.id == row.id).execute()
            except IntegrityError as ex:
                raise _conflict(values) from ex
        resp.media = serialize(MailingList.get(MailingList.id == row.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, list_id: str) -> None:
        """Delete the list (contacts stay)."""
        row = get_or_404(MailingList.select(), MailingList.id, list_id, "list")
        parent_rows.delete_list(MailingList._meta.database, row.tenant_id, row.id)
        resp.status = 204


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the lists routes."""
    return [("/v1/lists", ListsResource()), ("/v1/lists/{list_id}", ListResource())]
