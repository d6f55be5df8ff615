"""Refuse query parameters an operation does not document.

A misspelt ``limt=5`` or ``satus=sent`` used to be ignored silently and the
caller got an unfiltered list; now it is a 400 naming the parameter and the
ones the operation accepts (from the same ``docs`` the OpenAPI is built from).
"""

from __future__ import annotations

from typing import Any

import falcon
from swiftmail_web.pagination import PARAMETERS as PAGE_PARAMETERS

from swiftmail_core.errors import SwiftMailError


class UnknownQueryParameterError(SwiftMailError):
    """A query parameter the operation does not accept."""

    problem_type = "bad-request"
    title = "Unknown query parameter"
    status = 400


def accepted_parameters(resource: Any, method: str) -> frozenset[str] | None:
    """Return the query parameters ``method`` on ``resource`` documents (None: undocumented)."""
    operation = getattr(resource, "docs", {}).get(method)
    if operation is None:
        return None
    names = {p["name"] for p in operation.query if p.get("in") == "query"}
    if operation.paginated:
        names.update(p["name"] for p in PAGE_PARAMETERS)
    return frozenset(names)


def check_query_parameters(req: falcon.Request, resource: Any) -> None:
    """Raise UnknownQueryParameterError for the first parameter the operation does not take."""
    accepted = accepted_parameters(resource, req.method)
    if accepted is None:
        return
    unknown = sorted(set(req.params) - accepted)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise UnknownQueryParameterError(
            f"unknown query parameter {unknown[0]!r} for {req.method} {req.path}; "
            f"accepted: {known}")
