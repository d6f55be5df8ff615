"""``/v1/journeys`` and ``/v1/events``: automated journeys and the events that start them.

A journey is created as a draft with version 1 of its steps; changing the
steps writes the next version (contacts already in it finish on theirs).
``activate``, ``pause`` and ``archive`` move it through its states. The work
is in ``swiftmail_core.journeys``; these classes parse and serialize.
APPSEC: every query runs in the caller's tenant transaction, so another
tenant's journey or contact is simply not found.
"""

from __future__ import annotations

from typing import Any

import falcon
from peewee import IntegrityError
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
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

from swiftmail_core import parent_rows
from swiftmail_core.contact_ids import new_contact_id
from swiftmail_core.db import app_db
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.journeys.definition import EVENT_NAME, Trigger, parse_trigger
from swiftmail_core.journeys.enrollment import enroll_event
from swiftmail_core.journeys.service import (
    add_version,
    check_references,
    create_journey,
    current_steps,
)
from swiftmail_core.journeys.stats import journey_stats
from swiftmail_core.models import Contact, Journey, utcnow

FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=200),
    trigger=Field("object", required=True,
                  description="What enrolls a contact: {\"type\": \"list_subscribed\", "
                  "\"list_id\": ...}, {\"type\": \"event\", \"name\": ...} or "
                  "{\"type\": \"date_attribute\", \"attribute\": ..., \"days_before\": N, "
                  "\"yearly\": false} "
                  "(docs/journeys.md)."),
    steps=Field("object_list", required=True, max_items=50,
                description="The steps, in order: send_email, wait, branch, add_to_list, "
                "remove_from_list, exit (docs/journeys.md)."),
)
EVENT_FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=100,
               description="The event's name, as a journey's trigger names it."),
    contact_id=Field("uuid", description="The contact (or give email)."),
    email=Field("email", description="The contact's address (created if new)."),
    data=Field("object", description="What the journey's emails see as contact.data."),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "journey"}, "id": UUID, "name": STRING,
    "status": {"type": "string", "enum": ["draft", "active", "paused", "archived"]},
    "trigger": OBJECT, "version": INTEGER,
    "steps": {"type": "array", "items": OBJECT},
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
STATS_SCHEMA = obj({
    "object": {"type": "string", "const": "journey_stats"}, "id": UUID,
    "entered": INTEGER, "active": INTEGER, "completed": INTEGER, "exited": INTEGER,
    "exit_reasons": OBJECT, "steps": {"type": "array", "items": OBJECT},
})
EVENT_SCHEMA = obj({
    "object": {"type": "string", "const": "event"}, "name": STRING, "contact_id": UUID,
    "journey_ids": {"type": "array", "items": UUID},
})
#: Which states each action moves a journey from, and to.
ACTIONS = {
    "activate": (("draft", "paused"), "active"),
    "pause": (("active",), "paused"),
    "archive": (("draft", "active", "paused"), "archived"),
}


def serialize(row: Journey) -> dict[str, Any]:
    """Return the API shape of a journey (with its current steps)."""
    return {"object": "journey", "id": row.id, "name": row.name, "status": row.status,
            "trigger": Trigger(row.trigger_type, row.trigger_key,
                               row.trigger_days_before, row.trigger_yearly).to_json(),
            "version": row.current_version,
            "steps": current_steps(app_db, row.tenant_id, row.id),
            "created_at": row.created_at, "updated_at": row.updated_at}


def _conflict(name: Any) -> ConflictError:
    return ConflictError(f"a journey named {name!r} already exists")


def _journey(journey_id: str, *, for_update: bool = False) -> Journey:
    query = Journey.select().for_update() if for_update else Journey.select()
    return get_or_404(query, Journey.id, journey_id, "journey")


class JourneysResource:
    """The collection: list and create."""

    tag = "journeys"
    policy = {"GET": access.read("journeys"), "POST": access.write("journeys")}
    docs = {
        "GET": Operation("List journeys", response=page_of(SCHEMA), paginated=True),
        "POST": Operation("Create a journey (a draft)", body=FIELDS, response=SCHEMA,
                          status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List journeys, oldest first."""
        resp.media = paginate(req, Journey.select(), Journey.created_at, Journey.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a draft journey; a bad trigger or step is a 422 naming the part."""
        values = FIELDS.parse(read_body(req))
        try:
            with app_db.atomic():
                journey_id = create_journey(app_db, tenant_id(req), name=values["name"],
                                            trigger=values["trigger"], steps=values["steps"])
        except IntegrityError as ex:
            raise _conflict(values["name"]) from ex
        created(resp, serialize(_journey(str(journey_id))), f"/v1/journeys/{journey_id}")


class JourneyResource:
    """One journey: read, change, delete."""

    tag = "journeys"
    policy = {"GET": access.read("journeys"), "PATCH": access.write("journeys"),
              "DELETE": access.write("journeys")}
    docs = {
        "GET": Operation("Get a journey and its current steps", response=SCHEMA),
        "PATCH": Operation("Rename a journey, or change its steps (a new version) or, "
                           "while a draft, its trigger", body=FIELDS, partial=True,
                           response=SCHEMA),
        "DELETE": Operation("Delete a journey that is not active (its enrollments too)",
                            status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, journey_id: str) -> None:
        """Return one journey."""
        resp.media = serialize(_journey(journey_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, journey_id: str) -> None:
        """Rename; new steps become the next version; the trigger changes only in a draft."""
        row = _journey(journey_id, for_update=True)
        values = FIELDS.parse(read_body(req), partial=True)
        if row.status == "archived" and values:
            raise ConflictError(f"journey {row.id} is archived and cannot change")
        changes: dict[str, Any] = {}
        if "trigger" in values:
            if row.status != "draft":
                raise ConflictError(f"journey {row.id} is {row.status}: its trigger changes "
                                    "only while it is a draft")
            trigger = parse_trigger(values["trigger"])
            if trigger.type == "list_subscribed":
                check_references(app_db, tenant_id(req), (), trigger)
            changes.update(trigger_type=trigger.type, trigger_key=trigger.key,
                           trigger_days_before=trigger.days_before,
                           trigger_yearly=trigger.yearly)
        if "name" in values:
            changes["name"] = values["name"]
        try:
            with app_db.atomic():
                if "steps" in values:
                    add_version(app_db, tenant_id(req), row.id, values["steps"])
                if changes:
                    Journey.update(updated_at=utcnow(), **changes).where(
                        Journey.id == row.id).execute()
        except IntegrityError as ex:
            raise _conflict(values.get("name")) from ex
        resp.media = serialize(_journey(journey_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, journey_id: str) -> None:
        """Delete the journey, unless it is active (pause or archive it first)."""
        row = _journey(journey_id, for_update=True)
        if row.status == "active":
            raise ConflictError(f"journey {row.id} is active: pause or archive it first")
        Journey.delete().where(Journey.id == row.id).execute()
        resp.status = 204


class JourneyActionResource:
    """``POST /v1/journeys/{id}/activate|pause|archive``."""

    tag = "journeys"
    policy = {"POST": access.write("journeys")}

    def __init__(self, action: str) -> None:
        self.action = action
        self.docs = {"POST": Operation(
            {"activate": "Activate a journey (its trigger starts enrolling contacts)",
             "pause": "Pause a journey (contacts wait where they are; no one enters)",
             "archive": "Archive a journey (contacts in it leave at their next step)",
             }[action], response=SCHEMA)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, journey_id: str) -> None:
        """Move the journey to its next state, or 409 from a state that cannot."""
        row = _journey(journey_id, for_update=True)
        sources, target = ACTIONS[self.action]
        if row.status not in sources:
            raise ConflictError(f"journey {row.id} is {row.status} and cannot {self.action}")
        Journey.update(status=target, updated_at=utcnow()).where(Journey.id == row.id).execute()
        resp.media = serialize(_journey(journey_id))


class JourneyStatsResource:
    """``GET /v1/journeys/{id}/stats``."""

    tag = "journeys"
    policy = {"GET": access.read("journeys")}
    docs = {"GET": Operation("Journey stats: entered, per step, completed, exited",
                             response=STATS_SCHEMA)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, journey_id: str) -> None:
        """Return the journey's numbers."""
        row = _journey(journey_id)
        resp.media = {"object": "journey_stats", "id": row.id,
                      **journey_stats(app_db, tenant_id(req), row.id)}


class EventsResource:
    """``POST /v1/events``: something a contact did; journeys it triggers enroll them."""

    tag = "journeys"
    policy = {"POST": access.write("events")}
    docs = {"POST": Operation("Record an event for a contact (starts the journeys it triggers)",
                              body=EVENT_FIELDS, response=EVENT_SCHEMA, status=202)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enroll the contact in the active journeys this event triggers."""
        values = EVENT_FIELDS.parse(read_body(req))
        name = values["name"]
        if not EVENT_NAME.match(name):
            raise ValidationError.for_field("name", "must be 1-100 letters, digits or _ . : -")
        if ("contact_id" in values) == ("email" in values):
            raise ValidationError.for_field("contact_id", "give exactly one of contact_id or email")
        if "contact_id" in values:
            contact = Contact.select().where(Contact.id == values["contact_id"]).first()
            if contact is None:
                raise NotFoundError(f"no contact {values['contact_id']}")
        else:
            contact = Contact.select().where(Contact.email_lower == values["email"].lower()).first()
            if contact is None:
                contact_id = new_contact_id()
                # NOTE: stands in for the contacts' foreign key to tenants (0191).
                parent_rows.lock_tenant(app_db, tenant_id(req))
                Contact.insert(tenant_id=tenant_id(req), id=contact_id,
                               email=values["email"]).execute()
                contact = Contact.get(Contact.id == contact_id)
        entered = enroll_event(app_db, tenant_id(req), name, contact.id, values.get("data") or {})
        resp.status = 202
        resp.media = {"object": "event", "name": name, "contact_id": contact.id,
                      "journey_ids": entered}


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the journeys and events routes."""
    return [
        ("/v1/journeys", JourneysResource()),
        ("/v1/journeys/{journey_id}", JourneyResource()),
        *((f"/v1/journeys/{{journey_id}}/{action}", JourneyActionResource(action))
          for action in ACTIONS),
        ("/v1/journeys/{journey_id}/stats", JourneyStatsResource()),
        ("/v1/events", EventsResource()),
    ]
