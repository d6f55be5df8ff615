"""The Citus suite (``make test-citus``): a real three-node cluster per session.

Skipped in the main suite; ``SWIFTMAIL_TEST_CITUS=1`` runs it (the make target
builds Citus from ``../shared/vendor/citus`` first when it is missing).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
import redis
from swiftmail_plugins.smtp_transport import SmtpTransport

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.testing.smtp_sink import SmtpSink
from tests.citus.cluster import CitusCluster, citus_installed

RUN = os.environ.get("SWIFTMAIL_TEST_CITUS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder unless the Citus suite was asked for."""
    if RUN and citus_installed():
        return
    reason = ("Citus suite: run `make test-citus`" if not RUN
              else "Citus is not built: bash ../shared/vendor/citus/build.sh")
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    """One coordinator and two workers, removed at the end even after a failure."""
    cluster = CitusCluster()
    try:
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def citus_environ(citus_cluster: CitusCluster, tmp_path_factory, redis_url: str,
                  run_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment of a SwiftMail install whose database is the Citus coordinator."""
    data = tmp_path_factory.mktemp("citus-install")
    port = citus_cluster.coordinator_port
    return {
        "SWIFTMAIL_DATA_DIR": str(data),
        "SWIFTMAIL_CONFIG": str(data / "swiftmail.toml"),
        "DATABASE_URL": f"postgresql://127.0.0.1:{port}/swiftmail",
        "SWIFTMAIL_DATABASE_ADMIN_URL": citus_cluster.admin_url(port),
        "REDIS_URL": redis_url,
        "SWIFTMAIL_SECRET_KEY": "citus-test-secret-" + "x" * 32,
        "SWIFTMAIL_DB_OWNER_PASSWORD": "citus-test-password",
        "SWIFTMAIL_DB_APP_PASSWORD": "citus-test-password",
        "SWIFTMAIL_DB_SYSTEM_PASSWORD": "citus-test-password",
        "SWIFTMAIL_CITUS_WORKERS": ",".join(f"127.0.0.1:{p}" for p in citus_cluster.worker_ports),
        "SWIFTMAIL_WORKER_QUEUE_NAME": f"swiftmail-citus-{run_id}",
        "SWIFTMAIL_LOG_FORMAT": "json",
    }


@pytest.fixture(scope="session")
def citus_runtime(citus_environ: dict[str, str]):  # type: ignore[no-untyped-def]
    """A runtime on the coordinator after `swiftmail init --citus`."""
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings
    from tests.cli_helpers import run_swiftmail

    initialised = run_swiftmail("init", "--yes", "--citus", env=citus_environ, timeout=300)
    assert initialised.returncode == 0, initialised.stdout + initialised.stderr
    runtime = start(load_settings(environ=citus_environ), process=ProcessKind.TEST)
    yield runtime
    runtime.close()


class SinkTransportPlugin:
    """Registers an SMTP transport named 'sink' pointed at a local sink."""

    def __init__(self, port: int) -> None:
        self.port = port

    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return [SmtpTransport({"host": "127.0.0.1", "port": self.port}, name="sink")]


@pytest.fixture
def sink():  # type: ignore[no-untyped-def]
    with SmtpSink() as running:
        yield running


@pytest.fixture
def cluster_app(citus_runtime, sink, redis_url, run_id):  # type: ignore[no-untyped-def]
    """(settings, plugins with a 'sink' transport, API client, Redis) on the coordinator."""
    from swiftmail_web.app import create_app
    from swiftmail_web.config import WebConfig

    settings = dataclasses.replace(citus_runtime.settings, send_retry_base_seconds=0,
                                   send_batch_size=20)
    plugins = PluginManager.load(settings, extra=[SinkTransportPlugin(sink.port)])
    client = redis.Redis.from_url(redis_url)
    app = create_app(settings, plugins, redis_client=client,
                     config=WebConfig(redis_prefix=f"swiftmail-citus-{run_id}:"))
    return settings, plugins, falcon.testing.TestClient(app), client


