"""``--server private``: a benchmark on a PostgreSQL of its own, set up as the Ansible role does.

The settings come from the role's defaults (so the benchmark cannot drift from
what operators install), and the import benchmark's JSON line names the ones
the server really ran with. Nothing here asserts a timing.

The runs on a private server (initdb, start, a smoke run: about a minute
together) are left to ``make test-bench`` (``SWIFTMAIL_TEST_PRIVATE_SERVER=1``,
run by ``.ci/run``) to keep the main suite inside its time.
"""

from __future__ import annotations

import os

import pytest

from bench._common import MISSING_TOOL, OK
from bench._server import machine_arguments, role_settings
from tests.bench.test_smoke import one_json_line, run_benchmark

pytestmark = pytest.mark.bench
on_a_private_server = pytest.mark.skipif(
    os.environ.get("SWIFTMAIL_TEST_PRIVATE_SERVER") != "1",
    reason="benchmarks on a private server: run `make test-bench`")


def test_the_private_server_gets_the_roles_settings() -> None:
    settings = role_settings(memtotal_mb=16000)
    assert settings == {"shared_buffers": "4000MB", "max_wal_size": "8GB",
                        "min_wal_size": "1GB", "checkpoint_timeout": "15min",
                        "checkpoint_completion_target": "0.9", "max_connections": "300"}


@on_a_private_server
def test_the_import_benchmark_runs_on_a_private_server_and_names_its_settings() -> None:
    completed = run_benchmark("import_contacts", "--smoke", "--server", "private")
    line = one_json_line(completed)
    if completed.returncode == MISSING_TOOL:
        pytest.skip(str(line["error"]))
    assert completed.returncode == OK, completed.stderr[-4000:]
    assert line["server"] == "private"
    ran_with = line["server_settings"]
    assert isinstance(ran_with, dict)
    expected = role_settings()
    assert (ran_with["max_wal_size"], ran_with["checkpoint_timeout"], ran_with["min_wal_size"]) \
        == (expected["max_wal_size"], expected["checkpoint_timeout"], expected["min_wal_size"])
    assert ran_with["fsync"] == "on" and ran_with["full_page_writes"] == "on"
    assert ran_with["server_version"].startswith("15")


@on_a_private_server
def test_the_audience_benchmark_runs_on_a_private_server_and_names_its_settings() -> None:
    completed = run_benchmark("campaign_audience", "--smoke", "--server", "private")
    line = one_json_line(completed)
    if completed.returncode == MISSING_TOOL:
        pytest.skip(str(line["error"]))
    assert completed.returncode == OK, completed.stderr[-4000:]
    assert line["server"] == "private" and line["benchmark"] == "campaign_audience"
    assert line["server_settings"]["shared_buffers"] != "128MB"
    assert line["recipients"] > 0


def test_the_child_run_on_a_private_server_measures_on_it_as_the_machine() -> None:
    assert machine_arguments(["--smoke", "--server", "private", "--server-port=5999",
                              "--repeat", "2"]) == ["--smoke", "--repeat", "2",
                                                    "--server", "machine"]


@on_a_private_server
def test_a_private_server_recycles_wal_segments_before_it_is_measured() -> None:
    # A new cluster creates and zero-fills every 16 MB WAL segment; a running one
    # recycles them. The warm-up leaves segments to recycle.
    from pathlib import Path

    import psycopg2

    from bench._server import private_server, warm_wal

    with private_server() as private:
        url = private.admin_url(private.ports[0])
        connection = psycopg2.connect(url)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_ls_waldir()")
            segments = cursor.fetchone()[0]
        connection.close()
        assert segments > 64, segments  # 2 GB of WAL checkpointed: most kept for reuse
        warm_wal(url, 16)
        assert Path(private.base).exists()
    assert not Path(private.base).exists(), "removed at the end"
