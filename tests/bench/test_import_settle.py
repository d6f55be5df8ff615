"""The import benchmark settles the install's own database before each measurement.

``VACUUM`` without a table list covers only the database it runs in: run in a
node's ``postgres`` database it left the previous import's million rows (and
its GIN pending list) to autovacuum, which then ran in the middle of the next
measurement. Nothing here asserts a timing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg2
import pytest

from bench.import_contacts import Target, checkpoint, settle_urls

pytestmark = pytest.mark.bench

ADMIN_URL = os.environ.get("SWIFTMAIL_TEST_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


def _autocommit(dsn: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    return connection


def test_settle_urls_name_the_install_database_on_every_node() -> None:
    target = Target({}, "postgresql://postgres@127.0.0.1:5432/swiftmail_bench_x",
                    ("postgresql://postgres@127.0.0.1:5432/postgres",
                     "postgresql://postgres@127.0.0.1:9701/postgres"), Path("/nonexistent"))
    urls = [psycopg2.extensions.parse_dsn(url) for url in settle_urls(target)]
    assert [(url["dbname"], url["port"]) for url in urls] == [
        ("swiftmail_bench_x", "5432"), ("swiftmail_bench_x", "9701")]


def test_checkpoint_vacuums_the_install_tables(tmp_path: Path) -> None:
    database = f"swiftmail_settle_{secrets.token_hex(4)}"
    admin = _autocommit(ADMIN_URL)
    admin.cursor().execute(f"CREATE DATABASE {database}")
    dsn = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=database)
    try:
        scratch = _autocommit(dsn)
        with scratch.cursor() as cursor:
            cursor.execute("CREATE TABLE imported (n int) WITH (autovacuum_enabled = off)")
            cursor.execute("INSERT INTO imported SELECT generate_series(1, 1000)")
            checkpoint(Target({}, dsn, (ADMIN_URL,), tmp_path))
            cursor.execute("SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL"
                           " FROM pg_stat_user_tables WHERE relname = 'imported'")
            assert cursor.fetchone() == (True, True)
        scratch.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE {database} WITH (FORCE)")
        admin.close()
