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


def test_an_unhandled_task_exception_logs_its_traceback_as_structured_fields(capsys) -> None:
    # Regression: huey's "Unhandled exception in task" line (logger.exception in the
    # standard library) went out with exc_info as the repr of a tuple, no traceback.
    from huey import MemoryHuey

    configure_logging("info", "json")
    huey = MemoryHuey("logs-test")

    @huey.task()
    def fails(api_key: str) -> None:
        raise ZeroDivisionError(f"cannot divide by {len(api_key) - len(api_key)}")

    fails("sm_live_secret")
    huey.execute(huey.dequeue())
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if "Unhandled exception in task" in line]
    assert line["level"] == "error" and "exc_info" not in line
    (raised,) = line["exception"]
    assert raised["exc_type"] == "ZeroDivisionError"
    assert raised["exc_value"] == "cannot divide by 0"
    assert raised["frames"][-1]["name"] == "fails"
    assert "sm_live_secret" not in json.dumps(line)  # no local variables


def test_native_and_library_exceptions_have_one_shape(capsys) -> None:
    configure_logging("info", "json")
    for log in (structlog.get_logger("native"), logging.getLogger("library")):
        try:
            {}["missing"]
        except KeyError:
            log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["exception"][0]["exc_type"] for line in lines] == ["KeyError", "KeyError"]
