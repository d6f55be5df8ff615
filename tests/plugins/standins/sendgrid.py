"""A SendGrid v3 Mail Send stand-in that validates every body against the OpenAPI spec.

``POST /v3/mail/send`` with ``Authorization: Bearer <api_key>``: the JSON
body is validated against ``components.requestBodies.PostMailSend`` of
SendGrid's published OpenAPI document (``/work/shared/specs``, or
``SWIFTMAIL_SENDGRID_SPEC``); invalid bodies get 400 with SendGrid's error
shape, a wrong key 401; valid ones 202 with ``X-Message-Id``. Scripted
429 (with Retry-After) and 5xx answers come first when forced.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.plugins.standins.http_base import StandinServer

SPEC = Path(os.environ.get("SWIFTMAIL_SENDGRID_SPEC",
                           "/work/shared/specs/sendgrid-mail-v3.openapi.json"))
SCHEMA_POINTER = "#/components/requestBodies/PostMailSend/content/application~1json/schema"


def mail_send_validator() -> jsonschema.Draft202012Validator:
    """Return a validator for the Mail Send request body, $refs resolved in the spec."""
    document = json.loads(SPEC.read_text())
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:sendgrid-mail-v3", resource)
    return jsonschema.Draft202012Validator(
        {"$ref": "urn:sendgrid-mail-v3" + SCHEMA_POINTER}, registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


class SendGridStandin(StandinServer):
    """The stand-in: records every accepted personalization."""

    def __init__(self, api_key: str = "SG.test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.validator = mail_send_validator()
        self.accepted: list[dict[str, Any]] = []  # {"to", "subject", "custom_args", "body"}
        self.invalid: list[str] = []

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Validate and accept a Mail Send request."""
        if path != "/v3/mail/send":
            return 404, {}, b'{"errors":[{"message":"not found"}]}'
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"errors": [{"field": None, "message": "authorization required"}]}).encode()
        try:
            document = json.loads(body)
        except ValueError:
            return 400, {}, b'{"errors":[{"field":null,"message":"Bad Request"}]}'
        errors = sorted(self.validator.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            with self.lock:
                self.invalid.extend(e.message for e in errors)
            return 400, {"Content-Type": "application/json"}, json.dumps({"errors": [
                {"field": ".".join(str(p) for p in e.path), "message": e.message}
                for e in errors[:5]]}).encode()
        with self.lock:
            for personalization in document["personalizations"]:
                for to in personalization["to"]:
                    self.accepted.append({
                        "to": to["email"], "subject": personalization.get("subject",
                                                                          document.get("subject")),
                        "custom_args": personalization.get("custom_args", {}),
                        "headers": personalization.get("headers", {}), "body": document})
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)}, b""
