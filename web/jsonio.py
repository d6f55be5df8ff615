"""JSON in and out: the encoder for responses and strict request bodies.

``Fields`` declares what a body may contain; ``Fields.parse`` refuses unknown
fields and the fields no client may set (``tenant_id``, ``role``, quotas,
``status``...), checks each value and names every offending field at once.
The same declaration renders the OpenAPI schema of the body.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import falcon
import falcon.media

from swiftmail_core.errors import ValidationError
from swiftmail_core.sending.send_time import LOCAL_TIME_PATTERN, parse_local_time
from swiftmail_core.timestamps import rfc3339

# Fields a client never sets through a body (unless a resource declares one).
FORBIDDEN = frozenset({
    "tenant_id", "role", "status", "quota", "daily_quota", "send_rate_per_second",
    "id", "created_at", "updated_at",
})
EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
MAX_BODY = 1_000_000


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        return rfc3339(value)
    if isinstance(value, (bytes, memoryview)):
        return None
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


dumps = partial(json.dumps, default=_default, separators=(",", ":"))


#: Deepest nesting of arrays and objects a request body may have.
MAX_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValidationError.for_field("body", f"is not valid JSON: {name} is not a JSON number")


def _check_parsed(value: Any) -> None:
    """Refuse too deep nesting and strings that are not Unicode text (lone surrogates)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise ValidationError.for_field(
                "body", f"is nested deeper than {MAX_DEPTH} levels of arrays and objects")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as ex:
        raise ValidationError.for_field(
            "body", "contains a lone surrogate escape (like \\ud800), which is not text"
        ) from ex


def loads(raw: bytes | str) -> Any:
    """Parse a request body strictly: no NaN or Infinity, bounded depth, real text only."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError as ex:
        raise ValidationError.for_field(
            "body", f"is nested deeper than {MAX_DEPTH} levels of arrays and objects") from ex
    except (ValueError, UnicodeDecodeError) as ex:
        raise ValidationError.for_field("body", f"is not valid JSON ({ex})") from ex
    _check_parsed(value)
    return value


def json_handler() -> falcon.media.JSONHandler:
    """Return Falcon's JSON handler with UUID and datetime support and strict parsing."""
    return falcon.media.JSONHandler(dumps=dumps, loads=loads)


def normalise_email(value: str) -> str:
    """Return an email trimmed, with its domain lowercased."""
    local, _, domain = value.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


@dataclasses.dataclass(frozen=True)
class Field:
    """One body field: its JSON type and checks."""

    kind: str  # string, email, uuid, datetime, local_time, integer, boolean, object, *_list
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    min_length: int = 0
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    max_items: int = 1000
    description: str = ""

    def check(self, name: str, value: Any) -> tuple[Any, str | None]:
        """Return the converted value, or an error message."""
        if value is None:
            return (None, None) if self.nullable else (None, "must not be null")
        checker: Callable[[str, Any], tuple[Any, str | None]] = getattr(self, "_" + self.kind)
        return checker(name, value)

    def _string(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str):
            return None, "must be a string"
        if "\x00" in value:
            return None, "must not contain NUL characters"
        if len(value) < self.min_length:
            return None, f"must be at least {self.min_length} characters"
        if self.max_length is not None and len(value) > self.max_length:
            return None, f"must be at most {self.max_length} characters"
        if self.enum is not None and value not in self.enum:
            return None, f"must be one of {', '.join(self.enum)}"
        return value, None

    def _local_time(self, name: str, value: Any) -> tuple[Any, str | None]:
        try:
            parse_local_time(value)
        except ValueError as ex:
            return None, str(ex)
        return value, None

    def _email(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str):
            return None, "must be a string"
        value = normalise_email(value)
        if len(value) > 254 or not EMAIL.match(value):
            return None, "is not a valid email address"
        return value, None

    def _uuid(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str):
            return None, "must be a UUID string"
        try:
            return uuid.UUID(value), None
        except ValueError:
            return None, "must be a UUID"

    def _datetime(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str):
            return None, "must be an RFC 3339 date-time string"
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None, "must be an RFC 3339 date-time, e.g. 2030-01-01T09:00:00Z"
        if parsed.tzinfo is None:
            return None, "must include a time zone offset (e.g. Z)"
        try:
            # NOTE: PostgreSQL refuses offsets past +-15:59; store UTC instead.
            parsed = parsed.astimezone(datetime.UTC)
        except OverflowError:
            return None, "is out of range"
        if not 1970 <= parsed.year <= 9999:
            return None, "must be between 1970 and 9999"
        return parsed, None

    def _integer(self, name: str, value: Any) -> tuple[Any, str | None]:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "must be an integer"
        if self.minimum is not None and value < self.minimum:
            return None, f"must be at least {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return None, f"must be at most {self.maximum}"
        return value, None

    def _boolean(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, bool):
            return None, "must be true or false"
        return value, None

    def _object(self, name: str, value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, dict):
            return None, "must be a JSON object"
        if len(json.dumps(value)) > 64_000:
            return None, "must be at most 64 kB of JSON"
        if "\\u0000" in json.dumps(value):
            return None, "must not contain NUL characters"
        return value, None

    def _list(self, value: Any, item: Field, name: str) -> tuple[Any, str | None]:
        if not isinstance(value, list):
            return None, "must be an array"
        if len(value) > self.max_items:
            return None, f"must have at most {self.max_items} items"
        out = []
        for index, entry in enumerate(value):
            converted, error = item.check(f"{name}[{index}]", entry)
            if error:
                return None, f"item {index} {error}"
            out.append(converted)
        return out, None

    def _uuid_list(self, name: str, value: Any) -> tuple[Any, str | None]:
        return self._list(value, Field("uuid"), name)

    def _string_list(self, name: str, value: Any) -> tuple[Any, str | None]:
        return self._list(value, Field("string", max_length=self.max_length or 200,
                                       enum=self.enum), name)

    def _email_list(self, name: str, value: Any) -> tuple[Any, str | None]:
        return self._list(value, Field("email"), name)

    def _object_list(self, name: str, value: Any) -> tuple[Any, str | None]:
        return self._list(value, Field("object"), name)

    def json_schema(self) -> dict[str, Any]:
        """Return the JSON Schema (OpenAPI 3.1) of this field."""
        simple: dict[str, dict[str, Any]] = {
            "string": {"type": "string"},
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "uuid": {"type": "string", "format": "uuid"},
            "local_time": {"type": "string", "pattern": LOCAL_TIME_PATTERN},
            "datetime": {"type": "string", "format": "date-time"},
            "integer": {"type": "integer"},
            "boolean": {"type": "boolean"},
            "object": {"type": "object"},
            "uuid_list": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "string_list": {"type": "array", "items": {"type": "string"}},
            "email_list": {"type": "array", "items": {"type": "string", "format": "email"}},
            "object_list": {"type": "array", "items": {"type": "object"}},
        }
        schema = dict(simple[self.kind])
        if self.kind == "string":
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
            if self.min_length:
                schema["minLength"] = self.min_length
            if self.enum:
                schema["enum"] = list(self.enum)
        if self.kind == "string_list" and self.enum:
            schema["items"] = {"type": "string", "enum": list(self.enum)}
        if self.kind.endswith("_list"):
            schema["maxItems"] = self.max_items
        if self.kind == "integer":
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
        if self.description:
            schema["description"] = self.description
        return schema


class Fields:
    """A request body declaration: its fields by name."""

    def __init__(self, **fields: Field) -> None:
        self.fields = fields

    def parse(self, body: Any, *, partial: bool = False) -> dict[str, Any]:
        """Return the checked values; raise ValidationError naming every bad field.

        ``partial`` (PATCH) makes every field optional.
        """
        if not isinstance(body, dict):
            raise ValidationError("the request body must be a JSON object",
                                  errors=[{"field": "", "message": "must be a JSON object"}])
        errors: list[dict[str, str]] = []
        values: dict[str, Any] = {}
        for name, value in body.items():
            field = self.fields.get(name)
            if field is None:
                # APPSEC: tenant_id, role, quotas and status are never taken from a body.
                message = ("is set by SwiftMail and cannot be set by a request"
                           if name in FORBIDDEN else "is not a known field")
                errors.append({"field": name, "message": message})
                continue
            converted, error = field.check(name, value)
            if error:
                errors.append({"field": name, "message": error})
            else:
                values[name] = converted
        if not partial:
            for name, field in self.fields.items():
                if field.required and name not in body:
                    errors.append({"field": name, "message": "is required"})
        if errors:
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
            raise ValidationError(f"invalid request body: {summary}", errors=errors)
        return values

    def json_schema(self, *, partial: bool = False) -> dict[str, Any]:
        """Return the JSON Schema of a body (``partial``: nothing required)."""
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: f.json_schema() for name, f in self.fields.items()},
        }
        required = [n for n, f in self.fields.items() if f.required and not partial]
        if required:
            schema["required"] = required
        return schema


def read_body(req: falcon.Request) -> Any:
    """Return the parsed JSON body (cached by the idempotency middleware)."""
    cached = getattr(req.context, "body_bytes", None)
    raw = cached if cached is not None else req.bounded_stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ValidationError.for_field("body", f"must be at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    content_type = (req.content_type or "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/merge-patch+json"):
        raise falcon.HTTPUnsupportedMediaType(description="send application/json")
    return loads(raw)


def parse_uuid(value: str, name: str = "id") -> uuid.UUID:
    """Return ``value`` as a UUID; a malformed id is simply not found."""
    from swiftmail_core.errors import NotFoundError

    try:
        return uuid.UUID(value)
    except ValueError as ex:
        raise NotFoundError(f"no such {name} {value!r}") from ex
