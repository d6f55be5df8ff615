"""``/v1/contacts``: create, read, update, delete, list with filters, bulk upsert."""

from __future__ import annotations

import json
import uuid
from typing import Any

import falcon
from peewee import IntegrityError
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, normalise_email, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    OBJECT,
    STRING,
    TIMESTAMP,
    UUID,
    created,
    get_or_404,
    tenant_id,
)

from swiftmail_core import parent_rows
from swiftmail_core.contact_ids import new_contact_id
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.journeys.enrollment import enroll_subscribed
from swiftmail_core.models import Contact, MailingList, Subscription, utcnow

STATUSES = ("active", "unsubscribed", "bounced", "complained", "blocklisted")
FIELDS = Fields(
    email=Field("email", required=True),
    name=Field("string", max_length=200),
    attributes=Field("object", description="Free-form attributes (merge fields)."),
)
BULK_MAX = 1000
LIST_IDS = Field("uuid_list", max_items=20)
SCHEMA = obj({
    "object": {"type": "string", "const": "contact"}, "id": UUID, "email": STRING,
    "name": STRING, "attributes": OBJECT, "status": {"type": "string", "enum": list(STATUSES)},
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
FILTERS = (
    {"name": "list_id", "in": "query", "required": False, "schema": UUID},
    {"name": "status", "in": "query", "required": False,
     "schema": {"type": "string", "enum": list(STATUSES)}},
    {"name": "email", "in": "query", "required": False, "schema": STRING},
    {"name": "attribute", "in": "query", "required": False,
     "description": "KEY:VALUE, repeatable; matches string attributes exactly",
     "schema": {"type": "array", "items": STRING}, "style": "form", "explode": True},
)


def serialize(contact: Contact) -> dict[str, Any]:
    """Return the API shape of a contact."""
    return {
        "object": "contact", "id": contact.id, "email": contact.email, "name": contact.name,
        "attributes": contact.attributes, "status": contact.status,
        "created_at": contact.created_at, "updated_at": contact.updated_at,
    }


def _filtered(req: falcon.Request) -> Any:
    query = Contact.select()
    list_id = req.get_param("list_id")
    if list_id is not None:
        try:
            list_uuid = uuid.UUID(list_id)
        except ValueError as ex:
            raise ValidationError.for_field("list_id", "must be a UUID") from ex
        query = query.where(Contact.id.in_(
            Subscription.select(Subscription.contact_id).where(
                Subscription.list_id == list_uuid, Subscription.status != "unsubscribed")))
    status = req.get_param("status")
    if status is not None:
        if status not in STATUSES:
            raise ValidationError.for_field("status", f"must be one of {', '.join(STATUSES)}")
        query = query.where(Contact.status == status)
    email = req.get_param("email")
    if email is not None:
        query = query.where(Contact.email_lower == email.strip().lower())
    for pair in req.get_param_as_list("attribute") or ():
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ValidationError.for_field("attribute", "use KEY:VALUE, e.g. plan:pro")
        query = query.where(Contact.attributes.contains({key: value}))
    return query


class ContactsResource:
    """The collection: list and create."""

    tag = "contacts"
    policy = {"GET": access.read("contacts"), "POST": access.write("contacts")}
    docs = {
        "GET": Operation("List contacts (filter by list, status, email, attribute)",
                         response=page_of(SCHEMA), paginated=True, query=FILTERS),
        "POST": Operation("Create a contact", body=FIELDS, response=SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List contacts, oldest first."""
        resp.media = paginate(req, _filtered(req), Contact.created_at, Contact.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a contact; an existing email is a 409."""
        values = FIELDS.parse(read_body(req))
        now = utcnow()
        contact_id = new_contact_id()
        # NOTE: stands in for the contacts' foreign key to tenants (0191).
        parent_rows.lock_tenant(Contact._meta.database, tenant_id(req))
        try:
            Contact.insert(tenant_id=tenant_id(req), id=contact_id, created_at=now,
                           updated_at=now, **values).execute()
        except IntegrityError as ex:
            raise ConflictError(
                f"a contact with email {values['email']!r} already exists") from ex
        contact = Contact.get(Contact.id == contact_id)
        created(resp, serialize(contact), f"/v1/contacts/{contact_id}")


class ContactResource:
    """One contact: read, update, delete."""

    tag = "contacts"
    policy = {"GET": access.read("contacts"), "PATCH": access.write("contacts"),
              "DELETE": access.write("contacts", role="admin")}
    docs = {
        "GET": Operation("Get a contact", response=SCHEMA),
        "PATCH": Operation("Update a contact (attributes are merged)", body=FIELDS,
                           partial=True, response=SCHEMA),
        "DELETE": Operation("Delete a contact", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, contact_id: str) -> None:
        """Return one contact."""
        resp.media = serialize(get_or_404(Contact.select(), Contact.id, contact_id, "contact"))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, contact_id: str) -> None:
        """Change email, name or attributes (attributes merge; null removes a key)."""
        contact = get_or_404(Contact.select().for_update(), Contact.id, contact_id, "contact")
        values = FIELDS.parse(read_body(req), partial=True)
        if "attributes" in values:
            merged = {**contact.attributes, **values["attributes"]}
            values["attributes"] = {k: v for k, v in merged.items() if v is not None}
        if values:
            try:
                Contact.update(updated_at=utcnow(), **values).where(
                    Contact.id == contact.id).execute()
            except IntegrityError as ex:
                raise ConflictError(
                    f"a contact with email {values.get('email')!r} already exists") from ex
        resp.media = serialize(Contact.get(Contact.id == contact.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, contact_id: str) -> None:
        """Delete a contact and its subscriptions."""
        contact = get_or_404(Contact.select(), Contact.id, contact_id, "contact")
        # NOTE: subscriptions have no foreign key to contacts (0191): deleted with it.
        parent_rows.delete_contact(Contact._meta.database, contact.tenant_id, contact.id)
        resp.status = 204


BULK_ITEM = FIELDS


class ContactsBulkResource:
    """``POST /v1/contacts/bulk``: upsert up to 1000 contacts in one transaction."""

    tag = "contacts"
    policy = {"POST": access.write("contacts")}
    docs = {"POST": Operation(
        "Upsert contacts by email (name replaced, attributes merged)",
        body_schema={
            "type": "object", "additionalProperties": False, "required": ["contacts"],
            "properties": {
                "contacts": {"type": "array", "minItems": 1, "maxItems": BULK_MAX,
                             "items": FIELDS.json_schema()},
                "list_ids": {"type": "array", "maxItems": 20,
                             "items": {"type": "string", "format": "uuid"}},
            }},
        response=obj({"object": {"type": "string", "const": "bulk_result"},
                      "created": {"type": "integer"}, "updated": {"type": "integer"},
                      "ids": {"type": "array", "items": UUID}}),
    )}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Validate every item first (all or nothing), then upsert set-based."""
        body = read_body(req)
        if not isinstance(body, dict):
            raise ValidationError.for_field("body", "must be a JSON object")
        unknown = sorted(set(body) - {"contacts", "list_ids"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: is not a known field",
                                  errors=[{"field": n, "message": "is not a known field"}
                                          for n in unknown])
        items = body.get("contacts")
        if not isinstance(items, list) or not 1 <= len(items) <= BULK_MAX:
            raise ValidationError.for_field("contacts", f"must be an array of 1 to {BULK_MAX}")
        list_ids, error = LIST_IDS.check("list_ids", body.get("list_ids", []))
        if error:
            raise ValidationError.for_field("list_ids", error)
        errors: list[dict[str, str]] = []
        rows: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(items):
            try:
                values = FIELDS.parse(item)
            except ValidationError as ex:
                errors.extend({"field": f"contacts[{index}].{e['field']}",
                               "message": e["message"]} for e in ex.errors)
                continue
            rows[normalise_email(values["email"]).lower()] = values  # last one wins
        if errors:
            raise ValidationError(f"{len(errors)} invalid contact field(s); nothing was written",
                                  errors=errors[:100])
        if list_ids:
            # NOTE: locked FOR KEY SHARE: stands in for the foreign key to lists (0189).
            missing = parent_rows.lock_lists(MailingList._meta.database, tenant_id(req),
                                             list_ids)
            if missing:
                raise NotFoundError(f"no list {missing[0]}")
        tenant = str(tenant_id(req))
        # NOTE: stands in for the contacts' foreign key to tenants (0191). The
        # subscriptions below need no lock on their contacts: the upsert's
        # ON CONFLICT DO UPDATE locks each one it does not create.
        parent_rows.lock_tenant(Contact._meta.database, tenant)
        now = utcnow()
        payload = [
            {"id": str(new_contact_id()), "email": v["email"], "name": v.get("name"),
             "attributes": v.get("attributes") or {}} for v in rows.values()
        ]
        cursor = Contact._meta.database.execute_sql(
            """
            INSERT INTO contacts (tenant_id, id, email, name, attributes, created_at, updated_at)
            SELECT %s, (r->>'id')::uuid, r->>'email', coalesce(r->>'name', ''),
                   r->'attributes', %s, %s
            FROM jsonb_array_elements(%s::jsonb) AS r
            ON CONFLICT (tenant_id, email_lower) DO UPDATE
               SET name = CASE WHEN EXCLUDED.name = '' THEN contacts.name ELSE EXCLUDED.name END,
                   attributes = contacts.attributes || EXCLUDED.attributes,
                   updated_at = EXCLUDED.updated_at
            RETURNING id, (xmax = 0) AS inserted
            """,
            (tenant, now, now, json.dumps(payload)),
        )
        results = cursor.fetchall()
        ids = [row[0] for row in results]
        if list_ids:
            Contact._meta.database.execute_sql(
                """
                INSERT INTO subscriptions (tenant_id, list_id, contact_id, status,
                                           consent_source, consent_at, confirmed_at)
                SELECT %s, l, c, 'confirmed', 'api-bulk', %s, %s
                FROM unnest(%s::uuid[]) AS l CROSS JOIN unnest(%s::uuid[]) AS c
                ON CONFLICT DO NOTHING
                """,
                (tenant, now, now, [str(x) for x in list_ids], [str(x) for x in ids]),
            )
            enroll_subscribed(Contact._meta.database, tenant, list_ids, ids)
        inserted = sum(1 for row in results if row[1])
        resp.media = {"object": "bulk_result", "created": inserted,
                      "updated": len(results) - inserted, "ids": ids}


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the contacts routes."""
    return [
        ("/v1/contacts", ContactsResource()),
        ("/v1/contacts/bulk", ContactsBulkResource()),
        ("/v1/contacts/{contact_id}", ContactResource()),
    ]
