"""``/v1/templates``: CRUD and a render preview on sample data.

Templates are Jinja2 run in the rendering package's sandbox
(``swiftmail_core.rendering``): saving validates them (a 422 names the field
and line), and preview renders exactly as a campaign would, tracking off.
If that package is unavailable, a plain ``ImmutableSandboxedEnvironment``
renders the preview instead.
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
from swiftmail_web.resources.common import (
    STRING,
    TIMESTAMP,
    UUID,
    created,
    get_or_404,
    tenant_id,
)

from swiftmail_core.errors import ConflictError, ValidationError
from swiftmail_core.models import Campaign, Template, utcnow

MAX_SOURCE = 512_000
FIELDS = Fields(
    name=Field("string", required=True, min_length=1, max_length=200),
    subject=Field("string", max_length=998),
    preheader=Field("string", max_length=500),
    html=Field("string", max_length=MAX_SOURCE),
    text=Field("string", max_length=MAX_SOURCE),
)
PREVIEW = Fields(sample=Field(
    "object", description="contact (email, name, attributes), campaign and tenant dicts."))
SCHEMA = obj({
    "object": {"type": "string", "const": "template"}, "id": UUID, "name": STRING,
    "subject": STRING, "preheader": STRING, "html": STRING, "text": STRING,
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
PREVIEW_SCHEMA = obj({"subject": STRING, "html": STRING, "text": STRING})


def serialize(row: Template) -> dict[str, Any]:
    """Return the API shape of a template."""
    return {"object": "template", "id": row.id, "name": row.name, "subject": row.subject,
            "preheader": row.preheader, "html": row.html, "text": row.text,
            "created_at": row.created_at, "updated_at": row.updated_at}


def validate(fields: dict[str, str]) -> None:
    """Raise ValidationError when a template field does not compile in the sandbox."""
    try:
        from swiftmail_core.rendering import validate_template
    except ImportError:  # pragma: no cover - rendering package not installed
        _fallback_compile(fields)
        return
    validate_template(fields.get("subject", ""), fields.get("html", ""),
                      fields.get("text", ""), fields.get("preheader", ""))


def _fallback_compile(fields: dict[str, str]) -> None:
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(autoescape=True)
    for name in ("subject", "preheader", "html", "text"):
        try:
            environment.from_string(fields.get(name, ""))
        except TemplateSyntaxError as ex:
            raise ValidationError.for_field(name, f"line {ex.lineno}: {ex.message}") from ex


def preview(fields: dict[str, str], sample: dict[str, Any], public_url: str) -> dict[str, str]:
    """Render subject, HTML and text on sample data."""
    try:
        from swiftmail_core.rendering import render_preview
    except ImportError:  # pragma: no cover
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        context = {"contact": {"email": "jane@example.com", "name": "Jane", "attributes": {}},
                   **sample}
        html_env = ImmutableSandboxedEnvironment(autoescape=True)
        text_env = ImmutableSandboxedEnvironment(autoescape=False)
        return {"subject": text_env.from_string(fields["subject"]).render(context),
                "html": html_env.from_string(fields["html"]).render(context),
                "text": text_env.from_string(fields["text"]).render(context)}
    return render_preview(fields, sample, public_url=public_url)


class TemplatesResource:
    """The collection: list and create."""

    tag = "templates"
    policy = {"GET": access.read("templates"), "POST": access.write("templates")}
    docs = {
        "GET": Operation("List templates", response=page_of(SCHEMA), paginated=True),
        "POST": Operation("Create a template (validated in the sandbox)", body=FIELDS,
                          response=SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List templates, oldest first."""
        resp.media = paginate(req, Template.select(), Template.created_at, Template.id,
                              serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a template; a duplicate name is a 409."""
        values = FIELDS.parse(read_body(req))
        validate(values)
        template_id = uuid.uuid4()
        now = utcnow()
        try:
            Template.insert(tenant_id=tenant_id(req), id=template_id, created_at=now,
                            updated_at=now, **values).execute()
        except IntegrityError as ex:
            raise ConflictError(f"a template named {values['name']!r} already exists") from ex
        created(resp, serialize(Template.get(Template.id == template_id)),
                f"/v1/templates/{template_id}")


class TemplateResource:
    """One template: read, update, delete."""

    tag = "templates"
    policy = {"GET": access.read("templates"), "PATCH": access.write("templates"),
              "DELETE": access.write("templates")}
    docs = {
        "GET": Operation("Get a template", response=SCHEMA),
        "PATCH": Operation("Update a template", body=FIELDS, partial=True, response=SCHEMA),
        "DELETE": Operation("Delete a template", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, template_id: str) -> None:
        """Return one template."""
        resp.media = serialize(get_or_404(Template.select(), Template.id, template_id,
                                          "template"))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, template_id: str) -> None:
        """Change fields; the result is validated as a whole."""
        row = get_or_404(Template.select().for_update(), Template.id, template_id, "template")
        values = FIELDS.parse(read_body(req), partial=True)
        validate({**serialize(row), **values})
        if values:
            try:
                Template.update(updated_at=utcnow(), **values).where(
                    Template.id == row.id).execute()
            except IntegrityError as ex:
                raise ConflictError(
                    f"a template named {values.get('name')!r} already exists") from ex
        resp.media = serialize(Template.get(Template.id == row.id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, template_id: str) -> None:
        """Delete a template (campaigns keep their own copy of the content)."""
        row = get_or_404(Template.select(), Template.id, template_id, "template")
        # NOTE: the foreign key cannot SET NULL itself on Citus (migration 0150).
        Campaign.update(template_id=None).where(Campaign.template_id == row.id).execute()
        Template.delete().where(Template.id == row.id).execute()
        resp.status = 204


class TemplatePreviewResource:
    """``POST /v1/templates/{id}/preview``: render on sample data."""

    tag = "templates"
    policy = {"POST": access.read("templates")}
    docs = {"POST": Operation("Render a template on sample data", body=PREVIEW,
                              response=PREVIEW_SCHEMA)}

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    def on_post(self, req: falcon.Request, resp: falcon.Response, template_id: str) -> None:
        """Return the rendered subject, HTML and text."""
        row = get_or_404(Template.select(), Template.id, template_id, "template")
        values = PREVIEW.parse(read_body(req))
        resp.media = preview(serialize(row), values.get("sample") or {}, self.public_url)


DRAFT_PREVIEW = Fields(
    subject=Field("string", max_length=998),
    preheader=Field("string", max_length=500),
    html=Field("string", max_length=MAX_SOURCE),
    text=Field("string", max_length=MAX_SOURCE),
    sample=Field("object", description="contact, campaign and tenant dicts."),
)


class DraftPreviewResource:
    """``POST /v1/templates/preview``: render unsaved content on sample data."""

    tag = "templates"
    tenant_transaction = False  # renders only; touches no tenant data
    policy = {"POST": access.read("templates")}
    docs = {"POST": Operation("Render unsaved template content on sample data",
                              body=DRAFT_PREVIEW, response=PREVIEW_SCHEMA)}

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Validate and render the given fields."""
        values = DRAFT_PREVIEW.parse(read_body(req))
        sample = values.pop("sample", None) or {}
        fields = {name: values.get(name, "") for name in ("subject", "preheader", "html", "text")}
        validate(fields)
        resp.media = preview(fields, sample, self.public_url)


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the template routes."""
    public_url = services["settings"].public_url
    return [
        ("/v1/templates", TemplatesResource()),
        ("/v1/templates/preview", DraftPreviewResource(public_url)),
        ("/v1/templates/{template_id}", TemplateResource()),
        ("/v1/templates/{template_id}/preview", TemplatePreviewResource(public_url)),
    ]
