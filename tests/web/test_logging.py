"""Each request logs one JSON line carrying its request id and tenant id."""

from __future__ import annotations

import json
import logging

import structlog

from swiftmail_core.logs import configure_logging


def test_request_log_line_has_ids(owner_a, capsys) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info", "json")
    try:
        owner_a.get("/v1/contacts", headers={"X-Request-ID": "log-test-1"})
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                 if line.startswith("{")]
    finally:
        # NOTE: the handlers hold capsys' stream, closed after this test: undo.
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)
    request_lines = [line for line in lines if line.get("request_id") == "log-test-1"]
    assert request_lines, lines
    line = request_lines[-1]
    assert line["tenant_id"] == str(owner_a.tenant_id)
    assert line["route"] == "/v1/contacts" and line["status"] == 200
