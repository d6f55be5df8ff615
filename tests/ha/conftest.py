"""The failover suite (``make test-ha``): real Redis Sentinel and PostgreSQL pairs.

Skipped in the main suite; ``SWIFTMAIL_TEST_HA=1`` runs it. The PostgreSQL
test points this process's database handles at its own pair, so the suite
runs alone (``make test-ha`` runs only tests/ha). Each test prints what it
measured as one ``HA-MEASURE {json}`` line (``-s`` shows them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.engines import PG_BIN, PostgresPair, RedisSentinelSet, sentinel_binary
from tests.ha.patroni import PatroniCluster, patroni_installed

RUN = os.environ.get("SWIFTMAIL_TEST_HA") == "1"
PASSWORD = "ha-test-password"
REDIS_PASSWORD = "ha-redis-password"
SENTINEL_PASSWORD = "ha-sentinel-password"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder unless the failover suite was asked for."""
    if RUN:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason="failover suite: run `make test-ha`"))


def install(database_url: str, admin_url: str, data_dir: Path) -> dict[str, str]:
    """Initialise SwiftMail on a cluster through ``init``'s code path; return its environment."""
    from swiftmail_core.install import initialise

    environ = {
        "SWIFTMAIL_DATA_DIR": str(data_dir),
        "SWIFTMAIL_CONFIG": str(data_dir / "swiftmail.toml"),
        "DATABASE_URL": database_url,
        "SWIFTMAIL_DATABASE_ADMIN_URL": admin_url,
        "SWIFTMAIL_SECRET_KEY": "ha-test-secret-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_APP_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": PASSWORD,
        "SWIFTMAIL_DB_FAILOVER_WAIT_SECONDS": "30",
        "SWIFTMAIL_DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    saved = dict(os.environ)
    os.environ.update(environ)
    try:
        initialise(None, {})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return environ


def measure(name: str, **figures: object) -> None:
    """Print one measurement line (collected into docs/availability.md).

    With ``SWIFTMAIL_MEASURE_FILE`` set, the line is appended there too, for
    the summary ``make test-cluster`` prints last (``tests/cluster/summary.py``).
    """
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"HA-MEASURE {line}", flush=True)
    if os.environ.get("SWIFTMAIL_MEASURE_FILE"):
        with open(os.environ["SWIFTMAIL_MEASURE_FILE"], "a") as handle:
            handle.write(line + "\n")


@pytest.fixture
def sentinel_set(request: pytest.FixtureRequest) -> Iterator[RedisSentinelSet]:
    """A Redis master, replica and three Sentinels, removed even after a failure.

    ``down-after-milliseconds`` is 1000 unless the test parametrizes it.
    """
    if sentinel_binary() is None:
        pytest.fail("redis-sentinel is not installed: bash .ci/system-packages")
    engines = RedisSentinelSet(getattr(request, "param", 1000))
    try:
        yield engines.start()
    finally:
        engines.stop()


@pytest.fixture
def protected_sentinel_set() -> Iterator[RedisSentinelSet]:
    """A master, replica and three Sentinels that all require a password, as the role makes them."""
    if sentinel_binary() is None:
        pytest.fail("redis-sentinel is not installed: bash .ci/system-packages")
    engines = RedisSentinelSet(1000, password=REDIS_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    try:
        yield engines.start()
    finally:
        engines.stop()


@pytest.fixture
def postgres_pair() -> Iterator[PostgresPair]:
    """A PostgreSQL primary (the caller starts the standby), removed even after a failure."""
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.fail("PostgreSQL 15 server binaries are missing")
    pair = PostgresPair()
    try:
        pair.start_primary()
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def patroni_cluster() -> Iterator[PatroniCluster]:
    """etcd and two Patroni-managed PostgreSQL nodes, removed even after a failure."""
    if not patroni_installed():
        pytest.fail("patroni and etcd are not installed: bash .ci/system-packages")
    cluster = PatroniCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
