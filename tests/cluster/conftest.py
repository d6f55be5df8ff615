"""The cluster suite (``make test-cluster``): hosts as network namespaces on one bridge.

Skipped unless ``SWIFTMAIL_TEST_CLUSTER=1``; needs root. Namespaces are
removed after each test, even after a failure or a SIGTERM (``make
test-cluster``'s ``timeout``: it becomes a KeyboardInterrupt, so the fixtures'
finalizers run), and leftovers of a run killed harder are removed before the
first.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import netns

RUN = os.environ.get("SWIFTMAIL_TEST_CLUSTER") == "1"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """Under the cluster suite, SIGTERM ends the run like Ctrl-C: fixtures clean up."""
    if RUN:
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder unless the cluster suite was asked for."""
    if RUN:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason="cluster suite: run `make test-cluster`"))


@pytest.fixture
def network() -> Iterator[netns.Network]:
    """A bridge with no hosts yet; everything on it is removed at the end."""
    reason = netns.available()
    if reason:
        pytest.fail(reason)
    netns.remove_leftovers()
    network = netns.Network()
    try:
        yield network.start()
    finally:
        network.remove()
