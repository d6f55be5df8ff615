"""A Mailgun messages API stand-in (multipart form, basic auth, recipient-variables).

``POST /v3/{domain}/messages`` with ``Authorization: Basic api:<key>``:
``from``, ``to`` (one or more) and ``subject`` are required, with ``text``
or ``html``; ``recipient-variables`` must be a JSON object with an entry per
``to`` address when given. Answers 200 ``{"id", "message"}``, 400 with
``{"message"}``, 401 ``Forbidden``; scripted 429/5xx come first when forced.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import secrets
from typing import Any

from tests.plugins.standins.http_base import StandinServer

_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)


def parse_form(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """Parse multipart/form-data into (name, value) pairs, in order."""
    message = _PARSER.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise ValueError("not multipart/form-data")
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a part has no name")
        fields.append((str(name), part.get_content()))
    return fields


class MailgunStandin(StandinServer):
    """The stand-in: records each delivered (recipient, fields, variables)."""

    def __init__(self, api_key: str = "key-test", domain: str = "mg.sender.test") -> None:
        super().__init__()
        self.api_key = api_key
        self.domain = domain
        self.accepted: list[dict[str, Any]] = []

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Validate and accept a messages request."""
        if path != f"/v3/{self.domain}/messages":
            return 404, {}, b'{"message": "Domain not found"}'
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, {}, b"Forbidden"
        try:
            fields = parse_form(headers.get("Content-Type", ""), body)
        except ValueError as ex:
            return 400, {}, json.dumps({"message": str(ex)}).encode()
        values: dict[str, list[str]] = {}
        for name, value in fields:
            values.setdefault(name, []).append(value)
        for required in ("from", "to", "subject"):
            if not values.get(required):
                return 400, {}, json.dumps({"message": f"'{required}' parameter is missing"}).encode()
        if not (values.get("text") or values.get("html")):
            return 400, {}, b'{"message": "Need at least one of \'text\' or \'html\' parameters specified"}'
        variables: dict[str, Any] = {}
        if values.get("recipient-variables"):
            try:
                variables = json.loads(values["recipient-variables"][0])
            except ValueError:
                return 400, {}, b'{"message": "recipient-variables is not valid JSON"}'
            if set(variables) != set(values["to"]):
                return 400, {}, b'{"message": "recipient-variables must cover every to address"}'
        message_id = f"{secrets.token_hex(8)}@{self.domain}"
        with self.lock:
            for recipient in values["to"]:
                user_variables = {
                    name[2:]: value.replace("%recipient.", "").rstrip("%")
                    for name, (value, *_) in ((n, v) for n, v in values.items() if n.startswith("v:"))
                }
                resolved = {key: variables.get(recipient, {}).get(ref, ref)
                            for key, ref in user_variables.items()}
                self.accepted.append({"to": recipient, "subject": values["subject"][0],
                                      "user_variables": resolved, "id": message_id,
                                      "headers": {n[2:]: v[0] for n, v in values.items()
                                                  if n.startswith("h:")}})
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"id": f"<{message_id}>", "message": "Queued. Thank you."}).encode()
