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

RUN = os.environ.get("SWIFTMAIL_TEST_HA") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder unless the failover suite was asked for."""
    if RUN:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason="failover suite: run `make test-ha`"))


def measure(name: str, **figures: object) -> None:
    """Print one measurement line (collected into docs/availability.md)."""
    print(f"HA-MEASURE {json.dumps({'test': name, **figures}, sort_keys=True)}", flush=True)


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelSet]:
    """A Redis master, replica and three Sentinels, removed even after a failure."""
    if sentinel_binary() is None:
        pytest.fail("redis-sentinel is not installed: bash .ci/system-packages")
    engines = RedisSentinelSet()
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
