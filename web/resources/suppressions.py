"""``/v1/suppressions``: addresses never to mail (list, add, get, remove).

Removing a bounce or complaint suppression is an admin's decision; anything
the machinery added stays visible with its reason and source.
"""

from __future__ import annotations

from typing import Any

import falcon
from peewee import IntegrityError
from swiftmail_web import access
from swiftmail_web.iri import iri_to_uri
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import NULLABLE_TIMESTAMP, STRING, TIMESTAMP, tenant_id

from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.journeys.enrollment import exit_addresses
from swiftmail_core.models import Suppression, utcnow

REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "import", "blocklist")
FIELDS = Fields(
    email=Field("email", required=True),
    reason=Field("string", enum=("manual", "blocklist", "unsubscribe"),
                 description="Default manual."),
    detail=Field("string", max_length=1000),
    expires_at=Field("datetime", nullable=True),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "suppression"}, "email": STRING,
    "reason": {"type": "string", "enum": list(REASONS)}, "source": STRING, "detail": STRING,
    "created_at": TIMESTAMP, "expires_at": NULLABLE_TIMESTAMP,
})


def serialize(row: Suppression) -> dict[str, Any]:
    """Return the API shape of a suppression."""
    return {"object": "suppression", "email": row.email_lower, "reason": row.reason,
            "source": row.source, "detail": row.detail, "created_at": row.created_at,
            "expires_at": row.expires_at}


def _get(email: str) -> Suppression:
    row = Suppression.select().where(Suppression.email_lower == email.strip().lower()).first()
    if row is None:
        raise NotFoundError(f"{email!r} is not suppressed")
    return row


class SuppressionsResource:
    """The collection: list and add."""

    tag = "suppressions"
    policy = {"GET": access.read("suppressions"), "POST": access.write("suppressions")}
    docs = {
        "GET": Operation("List suppressed addresses", response=page_of(SCHEMA), paginated=True,
                         query=({"name": "reason", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": list(REASONS)}},)),
        "POST": Operation("Suppress an address", body=FIELDS, response=SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List suppressions, oldest first."""
        query = Suppression.select()
        reason = req.get_param("reason")
        if reason is not None:
            if reason not in REASONS:
                raise ValidationError.for_field("reason", f"must be one of {', '.join(REASONS)}")
            query = query.where(Suppression.reason == reason)
        resp.media = paginate(req, query, Suppression.created_at, Suppression.email_lower,
                              serialize, cursor_value=lambda value: value.strip().lower())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Add an address; an address already suppressed is a 409."""
        values = FIELDS.parse(read_body(req))
        email = values["email"].lower()
        expires_at = values.get("expires_at")
        if expires_at is not None and expires_at <= utcnow():
            raise ValidationError.for_field("expires_at", "must be in the future")
        try:
            Suppression.insert(tenant_id=tenant_id(req), email_lower=email,
                               reason=values.get("reason", "manual"), source="api",
                               detail=values.get("detail", ""), expires_at=expires_at).execute()
        except IntegrityError as ex:
            raise ConflictError(f"{email!r} is already suppressed") from ex
        exit_addresses(Suppression._meta.database, [(tenant_id(req), email)], "suppressed")
        resp.status = 201
        resp.media = serialize(_get(email))
        resp.set_header("Location", iri_to_uri(f"/v1/suppressions/{email}"))


class SuppressionResource:
    """One suppressed address: read or remove."""

    tag = "suppressions"
    policy = {"GET": access.read("suppressions"),
              "DELETE": access.write("suppressions", role="admin")}
    docs = {
        "GET": Operation("Get a suppression", response=SCHEMA),
        "DELETE": Operation("Remove a suppression (the address may be mailed again)",
                            status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, email: str) -> None:
        """Return the suppression of ``email``."""
        resp.media = serialize(_get(email))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, email: str) -> None:
        """Remove the suppression of ``email``."""
        row = _get(email)
        Suppression.delete().where(Suppression.email_lower == row.email_lower).execute()
        resp.status = 204


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the suppression routes."""
    return [("/v1/suppressions", SuppressionsResource()),
            ("/v1/suppressions/{email}", SuppressionResource())]
