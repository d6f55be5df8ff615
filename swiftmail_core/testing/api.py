"""Fixtures for the REST API: the app from the pure factory and keyed callers."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import falcon
import falcon.testing
import pytest
import redis as redis_lib

from swiftmail_core import redis_clients
from swiftmail_core.apikeys import create_api_key
from swiftmail_core.runtime import Runtime
from swiftmail_core.settings import Settings


@dataclasses.dataclass
class Caller:
    """A test client bound to one API key."""

    client: falcon.testing.TestClient
    key: str
    tenant_id: uuid.UUID
    role: str

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(headers or {})}

    def get(self, path: str, **kw: Any) -> falcon.testing.Result:
        """GET as this caller."""
        return self.client.simulate_get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> falcon.testing.Result:
        """POST JSON as this caller."""
        return self.client.simulate_post(
            path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> falcon.testing.Result:
        """PATCH JSON as this caller."""
        return self.client.simulate_patch(
            path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> falcon.testing.Result:
        """PUT JSON as this caller."""
        return self.client.simulate_put(
            path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> falcon.testing.Result:
        """DELETE as this caller."""
        return self.client.simulate_delete(
            path, headers=self._headers(kw.pop("headers", None)), **kw)


@pytest.fixture(scope="session")
def web_config(run_id: str) -> Any:
    """The web plugin's settings: generous limits and a per-run Redis prefix."""
    from swiftmail_web.config import WebConfig

    return WebConfig(redis_prefix=f"swiftmail-test-{run_id}:", rate_limit_per_tenant=100_000,
                     rate_limit_per_key=100_000)


@pytest.fixture(scope="session")
def app(runtime: Runtime, settings: Settings, web_config: Any) -> falcon.App:
    """The API application built by the pure factory, with every installed plugin's routes."""
    from swiftmail_web.app import create_app

    return create_app(settings, runtime.plugins, redis_client=redis_clients.client(settings),
                      config=web_config)


@pytest.fixture
def client(app: falcon.App) -> falcon.testing.TestClient:
    """A WSGI test client (no auth)."""
    return falcon.testing.TestClient(app)


@pytest.fixture
def make_caller(client: falcon.testing.TestClient) -> Callable[..., Caller]:
    """Factory: a caller with a fresh key of ``role`` for ``tenant``."""

    def factory(tenant: Any, role: str = "owner", scopes: tuple[str, ...] = ()) -> Caller:
        created = create_api_key(tenant.id, role=role, name=f"test-{role}", scopes=scopes)
        return Caller(client, created.key, tenant.id, role)

    return factory


@pytest.fixture
def owner_a(make_caller: Callable[..., Caller], tenant_a: Any) -> Caller:
    """Tenant A's owner."""
    return make_caller(tenant_a, "owner")


@pytest.fixture
def viewer_a(make_caller: Callable[..., Caller], tenant_a: Any) -> Caller:
    """Tenant A's viewer."""
    return make_caller(tenant_a, "viewer")


@pytest.fixture
def editor_a(make_caller: Callable[..., Caller], tenant_a: Any) -> Caller:
    """Tenant A's editor."""
    return make_caller(tenant_a, "editor")


@pytest.fixture
def owner_b(make_caller: Callable[..., Caller], tenant_b: Any) -> Caller:
    """Tenant B's owner."""
    return make_caller(tenant_b, "owner")


@pytest.fixture
def flush_prefix(redis_client: redis_lib.Redis, web_config: Any) -> Iterator[None]:
    """Delete this run's Redis keys after a test."""
    yield
    for name in redis_client.scan_iter(match=web_config.redis_prefix + "*"):
        redis_client.delete(name)
