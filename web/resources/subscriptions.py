"""``/v1/lists/{list_id}/subscriptions``: subscribe, list, confirm, unsubscribe.

Subscribing to a double opt-in list leaves the subscription ``unconfirmed``
and writes a ``confirmation`` row to the message ledger in the same
transaction, its payload a ready message (subject, text, HTML with the
signed ``/confirm/{token}`` link) that the outbox sends like a
transactional one; other lists confirm at once.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    NULLABLE_TIMESTAMP,
    STRING,
    TIMESTAMP,
    UUID,
    get_or_404,
    tenant_id,
)

from swiftmail_core import parent_rows
from swiftmail_core.contact_ids import new_contact_id
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.journeys.enrollment import enroll_subscribed
from swiftmail_core.models import (
    Campaign,
    Contact,
    MailingList,
    Message,
    SendingDomain,
    Subscription,
    Tenant,
    utcnow,
)
from swiftmail_core.settings import Settings

STATUSES = ("unconfirmed", "confirmed", "unsubscribed")
FIELDS = Fields(
    contact_id=Field("uuid", description="An existing contact (or give email)."),
    email=Field("email", description="Creates the contact if it does not exist."),
    consent_source=Field("string", max_length=200, description="Where consent was given."),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "subscription"}, "list_id": UUID,
    "contact_id": UUID, "status": {"type": "string", "enum": list(STATUSES)},
    "consent_source": STRING, "consent_at": NULLABLE_TIMESTAMP,
    "confirmed_at": NULLABLE_TIMESTAMP, "unsubscribed_at": NULLABLE_TIMESTAMP,
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})


def serialize(row: Subscription) -> dict[str, Any]:
    """Return the API shape of a subscription."""
    return {
        "object": "subscription", "list_id": row.list_id, "contact_id": row.contact_id,
        "status": row.status, "consent_source": row.consent_source, "consent_at": row.consent_at,
        "confirmed_at": row.confirmed_at, "unsubscribed_at": row.unsubscribed_at,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


def _list(list_id: str) -> MailingList:
    return get_or_404(MailingList.select(), MailingList.id, list_id, "list")


def _subscription(list_row: MailingList, contact_id: str) -> Subscription:
    return get_or_404(
        Subscription.select().where(Subscription.list_id == list_row.id).for_update(),
        Subscription.contact_id, contact_id, "subscription")


def _contact_for(req: falcon.Request, values: dict[str, Any]) -> Contact:
    if ("contact_id" in values) == ("email" in values):
        raise ValidationError.for_field("contact_id", "give exactly one of contact_id or email")
    # NOTE: the contact row FOR KEY SHARE, or the tenant's before creating one: they
    # stand in for the subscriptions' and contacts' foreign keys (0191).
    if "contact_id" in values:
        contact = (Contact.select().where(Contact.id == values["contact_id"])
                   .for_update("FOR KEY SHARE").first())
        if contact is None:
            raise NotFoundError(f"no contact {values['contact_id']}")
        return contact
    email = values["email"]
    contact = (Contact.select().where(Contact.email_lower == email.lower())
               .for_update("FOR KEY SHARE").first())
    if contact is None:
        contact_id = new_contact_id()
        parent_rows.lock_tenant(Contact._meta.database, tenant_id(req))
        Contact.insert(tenant_id=tenant_id(req), id=contact_id, email=email).execute()
        contact = Contact.get(Contact.id == contact_id)
    return contact


class SubscriptionsResource:
    """A list's subscriptions: list and subscribe."""

    tag = "subscriptions"
    policy = {"GET": access.read("lists"), "POST": access.write("lists")}
    docs = {
        "GET": Operation("List a list's subscriptions", response=page_of(SCHEMA), paginated=True,
                         query=({"name": "status", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": list(STATUSES)}},)),
        "POST": Operation("Subscribe a contact (double opt-in sends a confirmation)",
                          body=FIELDS, response=SCHEMA, status=201),
    }

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def confirmation(self, req: falcon.Request, contact: Contact,
                     list_row: MailingList) -> dict[str, Any]:
        """Return the ledger payload of a double opt-in confirmation message."""
        from swiftmail_core.tokens import make_confirm_token

        token = make_confirm_token(self.settings.require("secret_key"), tenant_id(req),
                                   contact.id, list_row.id)
        url = f"{self.settings.public_url.rstrip('/')}/confirm/{token}"
        tenant = Tenant.get(Tenant.id == tenant_id(req))
        sender = str((tenant.settings or {}).get("default_from_email") or "")
        if not sender:
            # The tenant's own domain (verified first), else the install's public host.
            domain = (SendingDomain.select(SendingDomain.domain)
                      .order_by(SendingDomain.verified_at.is_null(), SendingDomain.created_at)
                      .scalar())
            host = domain or urllib.parse.urlsplit(self.settings.public_url).hostname
            sender = f"no-reply@{host or 'localhost'}"
        # NOTE: payload content is rendered as a template; tenant-supplied text
        # (the list name) travels as data, never spliced into the template.
        return {
            "list_id": str(list_row.id), "confirm_url": url, "from_email": sender,
            "from_name": tenant.name, "reply_to": "",
            "data": {"list_name": list_row.name, "confirm_url": url},
            "subject": "Please confirm your subscription to {{ contact.data.list_name }}",
            "text": "Confirm your subscription to {{ contact.data.list_name }}:\n\n"
                    "{{ contact.data.confirm_url }}\n\n"
                    "If you did not ask for this, ignore this message.",
            "html": "<p>Confirm your subscription to {{ contact.data.list_name }}:</p>"
                    '<p><a href="{{ contact.data.confirm_url }}">Yes, subscribe me</a></p>'
                    "<p>If you did not ask for this, ignore this message.</p>",
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, list_id: str) -> None:
        """List subscriptions of the list, oldest first."""
        row = _list(list_id)
        query = Subscription.select().where(Subscription.list_id == row.id)
        status = req.get_param("status")
        if status is not None:
            if status not in STATUSES:
                raise ValidationError.for_field("status", f"must be one of {', '.join(STATUSES)}")
            query = query.where(Subscription.status == status)
        resp.media = paginate(req, query, Subscription.created_at, Subscription.contact_id,
                              serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response, list_id: str) -> None:
        """Subscribe a contact; re-subscribing an unsubscribed contact restarts consent."""
        list_row = _list(list_id)
        # NOTE: stands in for the subscriptions' foreign key to lists (0189).
        if parent_rows.lock_lists(MailingList._meta.database, list_row.tenant_id, [list_row.id]):
            raise NotFoundError(f"no list {list_id}")
        values = FIELDS.parse(read_body(req))
        contact = _contact_for(req, values)
        if contact.status != "active":
            raise ConflictError(f"contact {contact.id} is {contact.status} and cannot subscribe")
        now = utcnow()
        status = "unconfirmed" if list_row.double_opt_in else "confirmed"
        existing = (Subscription.select().where(Subscription.list_id == list_row.id,
                                                Subscription.contact_id == contact.id)
                    .for_update().first())
        source = values.get("consent_source", "api")
        if existing is not None and existing.status == "confirmed":
            resp.media = serialize(existing)
            return
        if existing is None:
            Subscription.insert(
                tenant_id=tenant_id(req), list_id=list_row.id, contact_id=contact.id,
                status=status, consent_source=source, consent_at=now,
                confirmed_at=now if status == "confirmed" else None).execute()
        else:
            Subscription.update(status=status, consent_source=source, consent_at=now,
                                confirmed_at=now if status == "confirmed" else None,
                                unsubscribed_at=None, updated_at=now).where(
                Subscription.list_id == list_row.id,
                Subscription.contact_id == contact.id).execute()
        if status == "confirmed":
            enroll_subscribed(Subscription._meta.database, tenant_id(req), [list_row.id],
                              [contact.id])
        if status == "unconfirmed":
            # NOTE: the ledger row is the send request; the outbox worker sends it
            # through the same path as a transactional message (payload content).
            Message.insert(tenant_id=tenant_id(req), contact_id=contact.id, email=contact.email,
                           kind="confirmation", transport=Campaign.transport.default,
                           payload=self.confirmation(req, contact, list_row)).execute()
        row = Subscription.get(Subscription.list_id == list_row.id,
                               Subscription.contact_id == contact.id)
        resp.status = 201
        resp.media = serialize(row)
        resp.set_header("Location", f"/v1/lists/{list_row.id}/subscriptions/{contact.id}")


class SubscriptionResource:
    """One subscription: read it."""

    tag = "subscriptions"
    policy = {"GET": access.read("lists")}
    docs = {"GET": Operation("Get a subscription", response=SCHEMA)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, list_id: str,
               contact_id: str) -> None:
        """Return one subscription."""
        resp.media = serialize(_subscription(_list(list_id), contact_id))


class _Transition:
    tag = "subscriptions"
    policy = {"POST": access.write("lists")}
    target = ""
    allowed: tuple[str, ...] = ()

    def on_post(self, req: falcon.Request, resp: falcon.Response, list_id: str,
                contact_id: str) -> None:
        """Move the subscription to ``target``."""
        FIELDS_NONE.parse(read_body(req))
        row = _subscription(_list(list_id), contact_id)
        if row.status == self.target:
            resp.media = serialize(row)
            return
        if row.status not in self.allowed:
            raise ConflictError(f"subscription is {row.status}; cannot become {self.target}")
        now = utcnow()
        changes: dict[str, Any] = {"status": self.target, "updated_at": now}
        changes["confirmed_at" if self.target == "confirmed" else "unsubscribed_at"] = now
        Subscription.update(**changes).where(Subscription.list_id == row.list_id,
                                             Subscription.contact_id == row.contact_id).execute()
        resp.media = serialize(Subscription.get(Subscription.list_id == row.list_id,
                                                Subscription.contact_id == row.contact_id))


FIELDS_NONE = Fields()


class ConfirmResource(_Transition):
    """``POST .../confirm``: record a confirmation obtained elsewhere."""

    target = "confirmed"
    allowed = ("unconfirmed",)
    docs = {"POST": Operation("Confirm a subscription", body=FIELDS_NONE, response=SCHEMA)}


class UnsubscribeResource(_Transition):
    """``POST .../unsubscribe``: stop mail from this list to the contact."""

    target = "unsubscribed"
    allowed = ("unconfirmed", "confirmed")
    docs = {"POST": Operation("Unsubscribe a contact from a list", body=FIELDS_NONE,
                              response=SCHEMA)}


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the subscription routes."""
    base = "/v1/lists/{list_id}/subscriptions"
    return [
        (base, SubscriptionsResource(services["settings"])),
        (base + "/{contact_id}", SubscriptionResource()),
        (base + "/{contact_id}/confirm", ConfirmResource()),
        (base + "/{contact_id}/unsubscribe", UnsubscribeResource()),
    ]
