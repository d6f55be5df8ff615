"""Fixtures for the public endpoints: a lean app on a private hit stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import falcon
import falcon.testing
import pytest
from swiftmail_web.public import create_tracking_app
from swiftmail_web.public.services import PublicConfig, PublicServices

from swiftmail_core.tracking_ingest import HitStream
from tests.core.tracking.conftest import SentMessage, make_sent_message


@pytest.fixture
def public_config(run_id: str) -> PublicConfig:
    """Config with a stream and rate-limit keys private to this test."""
    suffix = uuid.uuid4().hex[:8]
    return PublicConfig(stream=f"{run_id}:hits:{suffix}",
                        redis_prefix=f"swiftmail-test-{run_id}-{suffix}:",
                        signup_per_ip_per_hour=3,
                        # NOTE: generous on a loaded test machine; the stall test sets its own.
                        redis_timeout_ms=2000)


@pytest.fixture
def public_services(runtime, settings, redis_client, public_config) -> Iterator[PublicServices]:  # type: ignore[no-untyped-def]
    """Services of the public app (real Redis, real PostgreSQL)."""
    services = PublicServices.build(settings, redis_client, runtime.plugins, public_config)
    services.stream.ensure_group()
    yield services
    redis_client.delete(public_config.stream)
    for key in redis_client.scan_iter(match=public_config.redis_prefix + "*"):
        redis_client.delete(key)


@pytest.fixture
def public_app(public_services: PublicServices) -> falcon.App:
    """The public routes alone."""
    return create_tracking_app(public_services)


@pytest.fixture
def public_client(public_app: falcon.App) -> falcon.testing.TestClient:
    """A WSGI client for the public app; it never sends cookies."""
    return falcon.testing.TestClient(public_app)


@pytest.fixture
def hit_stream(public_services: PublicServices, redis_client) -> HitStream:  # type: ignore[no-untyped-def]
    """The public app's hit stream, read as the drainer reads it (no hot-path timeout)."""
    return HitStream(redis_client, public_services.config.stream)


@pytest.fixture
def sent_message(tenant_a) -> SentMessage:  # type: ignore[no-untyped-def]
    """A delivered campaign message of tenant A with one link."""
    return make_sent_message(tenant_a.id)


@pytest.fixture(autouse=True)
def _logs_to_current_stdout() -> None:
    """Point structlog at this test's stdout.

    NOTE: ``configure_logging`` binds the stream it is called with; a CLI test
    run earlier in the session can leave it bound to a closed stream.
    """
    from swiftmail_core.logs import configure_logging

    configure_logging("warning", "json")
