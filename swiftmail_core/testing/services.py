"""Fixtures for the real services a SwiftMail test needs: PostgreSQL, Redis, DNS.

PostgreSQL: ``SWIFTMAIL_TEST_ADMIN_URL`` (a superuser URL), else the local
server at 127.0.0.1:5432 as ``postgres``, else an embedded pgserver. Every
test run gets its own database (``swiftmail_test_<id>``), created and migrated
by the same ``init`` code path as production, and dropped at the end; tests
touch tenant data as the app role. Redis: ``SWIFTMAIL_TEST_REDIS_URL``, else
127.0.0.1:6379, else embedded; keys are namespaced per run. DNS: a server on
loopback that every process of the run resolves with.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from psycopg2 import sql

from swiftmail_core import db, embedded, redis_clients
from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.install import initialise
from swiftmail_core.plugins import PluginManager
from swiftmail_core.runtime import ProcessKind, Runtime, start
from swiftmail_core.settings import Settings, load_settings
from swiftmail_core.testing.dns import DnsServer

RUN_ID = secrets.token_hex(4)
TEST_ROLES = {
    "db_owner_role": "swiftmail_test_owner",
    "db_app_role": "swiftmail_test_app",
    "db_system_role": "swiftmail_test_system",
}
TEST_PASSWORD = "swiftmail-test-password"  # trust auth locally; set anyway


def _reachable_postgres(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def _reachable_redis(url: str) -> bool:
    probe = redis_clients.client(load_settings(environ={"REDIS_URL": url}), timeout=2, retries=0)
    try:
        return bool(probe.ping())
    except (redis_lib.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id unique to this test run (for key prefixes and names)."""
    return RUN_ID


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory shared by the whole run."""
    return tmp_path_factory.mktemp("swiftmail")


@pytest.fixture(scope="session")
def pg_admin_url(session_dir: Path) -> str:
    """A superuser URL of a real PostgreSQL server."""
    for url in (
        os.environ.get("SWIFTMAIL_TEST_ADMIN_URL"),
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ):
        if url and _reachable_postgres(url):
            return url
    return embedded.postgres_admin_url(Path("/tmp") / f"swiftmail-test-pg-{os.getuid()}")


@pytest.fixture(scope="session")
def redis_url(session_dir: Path) -> str:
    """The URL of a real Redis server."""
    for url in (os.environ.get("SWIFTMAIL_TEST_REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if url and _reachable_redis(url):
            return url
    return embedded.redis_url(session_dir)


def _database_url(admin_url: str, database: str) -> str:
    params = psycopg2.extensions.parse_dsn(admin_url)
    params = {k: v for k, v in params.items() if k not in ("user", "password")}
    params["dbname"] = database
    return psycopg2.extensions.make_dsn(**params)


# Public-looking names the tests use (webhook URLs and the like). No test ever
# connects to these addresses; they only need to resolve to global ones.
PUBLIC_TEST_HOSTS = {
    "example.com": "93.184.215.14",
    "hooks.example.com": "93.184.215.15",
    "a.example.com": "93.184.215.16",
    "b.example.com": "93.184.215.17",
}


@pytest.fixture(scope="session")
def session_dns() -> Iterator[DnsServer]:
    """A real DNS server on loopback that every test-run process resolves with.

    APPSEC: no test may query the machine's resolver (traffic beyond loopback).
    """
    server = DnsServer().start()
    for name, address in PUBLIC_TEST_HOSTS.items():
        server.add(name, "A", address)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_environ(
    pg_admin_url: str, redis_url: str, session_dir: Path, session_dns: DnsServer
) -> dict[str, str]:
    """The environment a SwiftMail process of this test run would see."""
    database = f"swiftmail_test_{RUN_ID}"
    return {
        "SWIFTMAIL_DNS_NAMESERVERS": "127.0.0.1",
        "SWIFTMAIL_DNS_PORT": str(session_dns.port),
        "SWIFTMAIL_DATA_DIR": str(session_dir),
        "SWIFTMAIL_CONFIG": str(session_dir / "swiftmail.toml"),
        "DATABASE_URL": _database_url(pg_admin_url, database),
        "SWIFTMAIL_DATABASE_ADMIN_URL": pg_admin_url,
        "REDIS_URL": redis_url,
        "SWIFTMAIL_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": TEST_PASSWORD,
        "SWIFTMAIL_DB_APP_PASSWORD": TEST_PASSWORD,
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": TEST_PASSWORD,
        "SWIFTMAIL_LOG_FORMAT": "json",
        **{f"SWIFTMAIL_{key.upper()}": value for key, value in TEST_ROLES.items()},
    }


@pytest.fixture(scope="session")
def settings(test_environ: dict[str, str]) -> Settings:
    """Settings of this test run, read exactly as production reads them."""
    return load_settings(environ=test_environ)


@pytest.fixture(scope="session")
def targets(settings: Settings, test_environ: dict[str, str]) -> Iterator[DatabaseTargets]:
    """A freshly initialised and migrated database for this run (dropped at the end)."""
    saved = dict(os.environ)
    os.environ.update(test_environ)
    try:
        initialise(None, {})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    resolved = database_targets(settings)
    yield resolved
    db.disconnect()
    admin = psycopg2.connect(resolved.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (resolved.database,),
        )
        cursor.execute(
            sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(resolved.database))
        )
    admin.close()


@pytest.fixture(scope="session")
def runtime(settings: Settings, targets: DatabaseTargets) -> Iterator[Runtime]:
    """A connected runtime (app and system handles, built-in plugins)."""
    started = start(settings, process=ProcessKind.TEST)
    yield started
    started.close()


@pytest.fixture
def plugin_manager(settings: Settings) -> PluginManager:
    """A plugin manager with the installed plugins."""
    return PluginManager.load(settings)


@pytest.fixture
def owner_connection(targets: DatabaseTargets) -> Iterator[psycopg2.extensions.connection]:
    """A raw connection as the owner role (for catalog checks and scratch DDL)."""
    connection = psycopg2.connect(targets.dsn("owner"))
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def app_connection(targets: DatabaseTargets) -> Iterator[psycopg2.extensions.connection]:
    """A raw connection as the app role, outside tenant_tx."""
    connection = psycopg2.connect(targets.dsn("app"))
    yield connection
    connection.close()


@pytest.fixture
def redis_client(settings: Settings) -> redis_lib.Redis:
    """A Redis client on the test server (built as production builds one)."""
    return redis_clients.client(settings)
