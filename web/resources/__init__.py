"""The ``/v1`` resources, and the conventions every resource follows.

Adding a resource
-----------------
1. One module per resource family in ``web/resources/``; small classes with
   ``on_get`` / ``on_post`` / ``on_patch`` / ``on_delete``; a collection
   (``/v1/things``) and an item (``/v1/things/{thing_id}``) are separate
   classes. Keep them thin: parse, call a query or a core service, serialize.
2. Declare ``policy = {"GET": access.read("things"), "POST": access.write("things")}``.
   APPSEC: deny by default. A method missing from ``policy`` is a 403 for
   everyone; ``public = True`` (health, metrics, openapi) skips auth.
3. Tenant data: with the default ``tenant_transaction = True`` the
   ``TenantTransaction`` middleware has already opened
   ``tenant_tx(principal.tenant_id)`` when the responder runs; query the
   models directly (row-level security scopes them). It commits on a 2xx/3xx
   and rolls back on any error. A responder that calls a core service which
   opens its own ``tenant_tx`` (it cannot nest) sets
   ``tenant_transaction = False`` and passes ``req.context.principal.tenant_id``.
   The tenant always comes from ``req.context.principal``, never the URL/body.
4. Bodies: ``values = FIELDS.parse(read_body(req), partial=is_patch)`` with a
   ``jsonio.Fields`` declaration: unknown fields and ``tenant_id``, ``role``,
   ``status``, quota fields are refused with per-field errors.
5. Errors: raise ``SwiftMailError`` subclasses (``NotFoundError``,
   ``ValidationError.for_field``, ``ConflictError``...); the one serializer
   renders RFC 9457 problem+json. Another tenant's id is a ``NotFoundError``
   (it simply is not visible under row-level security).
6. Lists: ``paginate(req, query, Model.created_at, Model.id, serialize)``.
7. POST: ``Idempotency-Key`` is handled by middleware, nothing to do; with
   the middleware's transaction the stored response commits with the work.
   The body is buffered for hashing: read it with ``jsonio.read_body(req)``
   (or ``req.context.body_bytes`` when set) rather than ``req.bounded_stream``.
8. Document each method in ``docs = {"GET": Operation(...), ...}``; the
   OpenAPI document is built from these and a test fails when a routed
   method has no ``docs`` or no ``policy`` entry.
9. Register routes with a ``routes(services)`` function in the module and
   its name in ``MODULES`` below (or, from a plugin, through the
   ``swiftmail_register_routes`` hook with the same classes and rules).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import falcon

# Each module exposes ``routes(services) -> [(path, resource), ...]``. Modules
# not written yet (imports, exports) are skipped until they exist.
MODULES = (
    "contacts", "lists", "subscriptions", "api_keys", "tenant", "suppressions",
    "templates", "domains", "webhooks", "campaigns", "messages", "imports", "exports",
    "segments", "ab_tests", "journeys",
)


def add_v1_routes(app: falcon.App, services: dict[str, Any]) -> None:
    """Add every built-in ``/v1`` route to ``app``.

    ``services`` holds the collaborators: ``settings``, ``redis``, ``config``
    (``WebConfig``) and ``plugins`` (the ``PluginManager``).
    """
    for name in MODULES:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        module = importlib.import_module(qualified)
        for path, resource in module.routes(services):
            app.add_route(path, resource)
