"""`swiftmail import` / `export` / `jobs run` as a subprocess against real PostgreSQL."""

from __future__ import annotations

import csv
import gzip
import io

from swiftmail_core.db import app_db, tenant_tx
from tests.cli_helpers import run_swiftmail


def test_import_report_and_export_from_the_cli(test_environ, runtime, tenant_a, tmp_path) -> None:
    with tenant_tx(tenant_a.id):
        app_db.execute_sql("INSERT INTO lists (tenant_id, name) VALUES (%s, 'News')",
                           (str(tenant_a.id),))
    path = tmp_path / "people.csv.gz"
    path.write_bytes(gzip.compress(
        b"E-mail,Name,Town\ncli@example.com,Cli,Oslo\nnope,Bad,\n"))
    result = run_swiftmail(
        "import", "contacts", str(path), "--tenant", tenant_a.slug, "--list", "News",
        "--map", "Town=attributes.city", env=test_environ,
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "rows_ok: 1" in result.stdout and "rows_failed: 1" in result.stdout
    assert "row 3: email must contain exactly one @" in result.stdout
    job_id = result.stdout.split()[1].rstrip(":")

    report = run_swiftmail("import", "report", job_id, "--tenant", tenant_a.slug,
                           env=test_environ)
    assert report.returncode == 0, report.stderr
    assert "3,email must contain exactly one @,nope" in report.stdout

    exported = run_swiftmail("export", "contacts", "--tenant", tenant_a.slug, env=test_environ)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(row["email"], row["attributes"]) for row in rows] == [
        ("cli@example.com", '{"city": "Oslo"}'),
    ]


def test_cli_import_errors_are_one_line(test_environ, runtime, tenant_a, tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name\nx\n")
    result = run_swiftmail("import", "contacts", str(path), "--tenant", tenant_a.slug,
                           env=test_environ)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: map: no column maps to 'email'")
    ran = run_swiftmail("jobs", "run", "--limit", "1", env=test_environ)
    assert ran.returncode == 0, ran.stderr
