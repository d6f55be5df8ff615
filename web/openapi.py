"""The OpenAPI 3.1 document, built from the routes and their ``docs``.

Each routed resource documents its methods in ``docs`` (an ``Operation``
per HTTP method). ``build_document(app)`` walks Falcon's own route table,
so a route cannot hide from the document; ``undocumented(app)`` lists the
routed methods lacking ``docs`` or ``policy`` (a test keeps it empty).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import falcon
import falcon.inspect
from swiftmail_web.jsonio import Fields
from swiftmail_web.pagination import PARAMETERS as PAGE_PARAMETERS

from swiftmail_core import __version__

PROBLEM = {"$ref": "#/components/schemas/Problem"}
_ERRORS = {
    "400": "Malformed request", "401": "Missing or invalid API key",
    "403": "Role or scope does not allow this", "404": "Not found (or another tenant's)",
    "409": "Conflicts with the current state", "422": "Invalid input",
    "429": "Rate limited",
}
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclasses.dataclass(frozen=True)
class Operation:
    """How one method of a resource is documented."""

    summary: str
    body: Fields | None = None
    partial: bool = False
    response: dict[str, Any] | None = None
    status: int = 200
    paginated: bool = False
    query: tuple[dict[str, Any], ...] = ()
    body_schema: dict[str, Any] | None = None
    response_type: str = "application/json"
    request_type: str = "application/json"


def obj(properties: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """Return an object schema with every property required (response shape)."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a page of ``item``."""
    return obj({"object": {"type": "string", "const": "list"},
                "data": {"type": "array", "items": item}, "has_more": {"type": "boolean"}})


def routed_methods(app: falcon.App) -> dict[str, list[str]]:
    """Return each route's path and its methods with real (non-default) responders."""
    return {
        route.path: [m.method for m in route.methods if not m.internal and m.method in _METHODS]
        for route in falcon.inspect.inspect_routes(app)
    }


def _routes(app: falcon.App) -> list[tuple[str, Any, list[str]]]:
    return [(path, None, methods) for path, methods in routed_methods(app).items()]


def _resource(app: falcon.App, path: str) -> Any:
    found = app._router.find(_sample_path(path))
    return found[0] if found else None


def _sample_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)


def undocumented(app: falcon.App) -> list[str]:
    """Return ``METHOD path`` of routed /v1 methods without docs or policy."""
    missing = []
    for path, _, methods in _routes(app):
        if not path.startswith("/v1/") or path == "/v1/openapi.json":
            continue
        resource = _resource(app, path)
        for method in methods:
            if method not in getattr(resource, "docs", {}):
                missing.append(f"{method} {path} (no docs)")
            if method not in getattr(resource, "policy", {}):
                missing.append(f"{method} {path} (no policy)")
    return missing


def _operation(path: str, method: str, op: Operation, tag: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{([^}]+)\}", path)
    ]
    if op.paginated:
        params.extend(PAGE_PARAMETERS)
    params.extend(op.query)
    if method == "POST":
        params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                       "schema": {"type": "string", "minLength": 1, "maxLength": 255}})
    responses: dict[str, Any] = {}
    if op.status == 204:
        responses["204"] = {"description": "Done"}
    else:
        schema = op.response or {"type": "object"}
        responses[str(op.status)] = {"description": "Success",
                                     "content": {op.response_type: {"schema": schema}}}
    for code, text in _ERRORS.items():
        responses[code] = {"description": text,
                           "content": {"application/problem+json": {"schema": PROBLEM}}}
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
        "summary": op.summary,
        "tags": [tag],
        "security": [{"apiKey": []}],
        "parameters": params,
        "responses": responses,
    }
    body = op.body_schema or (op.body.json_schema(partial=op.partial) if op.body else None)
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {op.request_type: {"schema": body}}}
    return operation


def build_document(app: falcon.App) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every documented /v1 route."""
    paths: dict[str, Any] = {}
    for path, _, methods in sorted(_routes(app), key=lambda item: item[0]):
        if not path.startswith("/v1/") or path == "/v1/openapi.json":
            continue
        resource = _resource(app, path)
        docs: dict[str, Operation] = getattr(resource, "docs", {})
        tag = getattr(resource, "tag", path.split("/")[2])
        item = {m.lower(): _operation(path, m, docs[m], tag) for m in methods if m in docs}
        if item:
            paths[path] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "SwiftMail API", "version": __version__,
                 "description": "The tenant REST API. See docs/api.md."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "sm_live_... API key"}},
            "schemas": {"Problem": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"},
                    "status": {"type": "integer"}, "detail": {"type": "string"},
                    "instance": {"type": "string"}, "request_id": {"type": "string"},
                    "errors": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"},
                                       "message": {"type": "string"}}}},
                },
                "required": ["type", "title", "status", "detail"],
            }},
        },
    }


class OpenApiResource:
    """``GET /v1/openapi.json``: the document (public, built once)."""

    public = True

    def __init__(self, app: falcon.App) -> None:
        self.app = app
        self._document: dict[str, Any] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the OpenAPI 3.1 document."""
        if self._document is None:
            self._document = build_document(self.app)
        resp.media = self._document
