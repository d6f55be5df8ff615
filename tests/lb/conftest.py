"""Fixtures for the API behind HAProxy: two `swiftmail serve` processes and HAProxy.

Every process a test starts is stopped when it ends, passed or failed. The
suite takes minutes (API processes start and stop again and again), so the
main suite skips it; ``make test-lb`` (``SWIFTMAIL_TEST_LB=1``) runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lb.processes import ApiProcess, HaproxyProcess, free_port, haproxy_binary

RUN = os.environ.get("SWIFTMAIL_TEST_LB") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder unless the load-balancer suite was asked for."""
    if RUN:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason="load-balancer suite: run `make test-lb`"))


# Each API "host" listens on its own loopback address.
API_HOSTS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture
def api_environ(test_environ: dict[str, str], targets: Any, tmp_path: Path,
                run_id: str) -> dict[str, str]:
    """The environment of an API process of this test."""
    environ = {**os.environ, **test_environ, "SWIFTMAIL_DATA_DIR": str(tmp_path),
               "SWIFTMAIL_PLUGIN_WEB_REDIS_PREFIX": f"swiftmail-test-{run_id}-lb:",
               # The steady clients send as fast as the hosts answer: on a quiet machine
               # that passed the default 3,000 a minute per key and counted 429s as failures.
               "SWIFTMAIL_PLUGIN_WEB_RATE_LIMIT_PER_KEY": "1000000",
               "SWIFTMAIL_PLUGIN_WEB_RATE_LIMIT_PER_TENANT": "1000000"}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environ


@pytest.fixture
def make_api(api_environ: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Factory: an API process on its own loopback address; all killed at the end."""
    started: list[ApiProcess] = []

    def factory(host: str, drain_seconds: float = 0) -> ApiProcess:
        environ = {**api_environ, "SWIFTMAIL_DATA_DIR": str(tmp_path / host)}
        (tmp_path / host).mkdir(exist_ok=True)
        api = ApiProcess(f"{host}:{free_port(host)}", environ, tmp_path / f"serve-{host}.log",
                         drain_seconds=drain_seconds)
        started.append(api)
        return api

    yield factory
    for api in started:
        api.kill()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[list[str]], HaproxyProcess]]:
    """Factory: HAProxy with contrib/haproxy/haproxy.cfg in front of the given addresses."""
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("haproxy is not installed (bash .ci/system-packages installs it as root)")
    started: list[HaproxyProcess] = []

    def factory(servers: list[str]) -> HaproxyProcess:
        bind = f"127.0.0.1:{free_port('127.0.0.1')}"
        proxy = HaproxyProcess(binary, tmp_path, bind, servers)
        started.append(proxy)
        return proxy.start()

    yield factory
    for proxy in started:
        proxy.stop()
