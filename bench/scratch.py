"""A scratch SwiftMail install for benchmarks: its environment, and its removal.

Benchmarks create a throwaway database through the production ``init`` path
(run with ``environment(...)``) and drop it afterwards with ``drop_database``.
``SWIFTMAIL_BENCH_ADMIN_URL`` names the PostgreSQL superuser to use.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg2
from psycopg2 import sql

ADMIN_URL = os.environ.get("SWIFTMAIL_BENCH_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "swiftmail-bench-password"


def environment(workdir: Path, database: str, role_prefix: str = "swiftmail_bench") -> dict[str, str]:
    """Return the environment a SwiftMail process of a benchmark sees."""
    params = psycopg2.extensions.parse_dsn(ADMIN_URL)
    params = {k: v for k, v in params.items() if k not in ("user", "password")}
    params["dbname"] = database
    return {
        "SWIFTMAIL_DATA_DIR": str(workdir),
        "SWIFTMAIL_CONFIG": str(workdir / "swiftmail.toml"),
        "DATABASE_URL": psycopg2.extensions.make_dsn(**params),
        "SWIFTMAIL_DATABASE_ADMIN_URL": ADMIN_URL,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "SWIFTMAIL_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_APP_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_OWNER_ROLE": f"{role_prefix}_owner",
        "SWIFTMAIL_DB_APP_ROLE": f"{role_prefix}_app",
        "SWIFTMAIL_DB_SYSTEM_ROLE": f"{role_prefix}_system",
        "SWIFTMAIL_LOG_LEVEL": "warning",
    }


def drop_database(database: str) -> None:
    """Drop a benchmark's scratch database, ending its sessions first."""
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s", (database,))
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
    admin.close()


def analyze(database_url: str, tables: str) -> None:
    """ANALYZE ``tables`` as the admin, as autovacuum would shortly after a bulk load."""
    params = psycopg2.extensions.parse_dsn(database_url)
    admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
    params.update({k: v for k, v in admin.items() if k in ("user", "password")})
    connection = psycopg2.connect(**params)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")
    connection.close()
