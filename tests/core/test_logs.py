"""Structured logs: JSON lines on stdout with bound context."""

from __future__ import annotations

import json
import logging

import structlog

from swiftmail_core.logs import bind_context, configure_logging


def test_json_lines_carry_bound_tenant_and_request(capsys) -> None:
    configure_logging("info", "json")
    log = structlog.get_logger("test")
    with bind_context(tenant_id="t-1", request_id="r-1"):
        log.info("contact_created", contact_id="c-1")
        logging.getLogger("stdlib").warning("from the standard library")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "contact_created"
    assert lines[0]["tenant_id"] == "t-1" and lines[0]["request_id"] == "r-1"
    assert lines[1]["event"] == "from the standard library" and lines[1]["tenant_id"] == "t-1"
    assert "tenant_id" not in lines[2]


def test_debug_is_filtered_at_info(capsys) -> None:
    configure_logging("info", "json")
    structlog.get_logger("test").debug("hidden")
    assert capsys.readouterr().out == ""


def test_an_idle_worker_does_not_log_every_task_huey_runs(capsys) -> None:
    # Regression: huey's INFO lines ("Executing ...tick", "... executed in") made an
    # idle worker write about five lines every tick.
    configure_logging("info", "json")
    logging.getLogger("huey.consumer").info("Executing swiftmail_core.sending.worker.tick")
    logging.getLogger("huey").warning("a real problem")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["a real problem"]
