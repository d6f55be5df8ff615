"""The one SwiftMail error hierarchy.

Every error a user can cause carries its RFC 9457 problem type, an HTTP status
and a message that says how to fix it. The API renders these as
``application/problem+json``; the CLI prints the message on one line.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://swiftmail.dev/problems/"


class SwiftMailError(Exception):
    """Base class of every error SwiftMail reports to a person."""

    problem_type = "error"
    title = "SwiftMail error"
    status = 500

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @property
    def type_uri(self) -> str:
        """Return the stable URI naming this kind of problem."""
        return PROBLEM_BASE + self.problem_type

    def to_problem(self) -> dict[str, Any]:
        """Return the RFC 9457 problem document for this error."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class ConfigurationError(SwiftMailError):
    """A setting is missing or wrong; the message names it and the fix."""

    problem_type = "configuration"
    title = "Configuration error"
    status = 500


class ValidationError(SwiftMailError):
    """Input failed validation; ``errors`` names each offending field."""

    problem_type = "validation"
    title = "Invalid input"
    status = 422

    @classmethod
    def for_field(cls, field: str, message: str) -> ValidationError:
        """Build a validation error about a single field."""
        return cls(f"{field}: {message}", errors=[{"field": field, "message": message}])


class NotFoundError(SwiftMailError):
    """The object does not exist for this tenant (another tenant's is the same)."""

    problem_type = "not-found"
    title = "Not found"
    status = 404


class ConflictError(SwiftMailError):
    """The request conflicts with the current state (duplicate, wrong status)."""

    problem_type = "conflict"
    title = "Conflict"
    status = 409


class AuthenticationError(SwiftMailError):
    """Credentials are missing, unknown or revoked."""

    problem_type = "unauthenticated"
    title = "Authentication required"
    status = 401


class PermissionDeniedError(SwiftMailError):
    """The principal's role or scopes do not allow this action."""

    problem_type = "forbidden"
    title = "Forbidden"
    status = 403


class TenantIsolationError(SwiftMailError):
    """Code tried to touch tenant data outside ``tenant_tx``."""

    problem_type = "tenant-isolation"
    title = "Tenant isolation violation"
    status = 500


class MigrationError(SwiftMailError):
    """A migration failed; the message names it and the database's reason."""

    problem_type = "migration"
    title = "Migration failed"
    status = 500


class PluginError(SwiftMailError):
    """A plugin failed to load or implements a hook that does not exist."""

    problem_type = "plugin"
    title = "Plugin error"
    status = 500


class ServiceUnavailableError(SwiftMailError):
    """A backing service (PostgreSQL, Redis) cannot be reached."""

    problem_type = "unavailable"
    title = "Service unavailable"
    status = 503
