"""Fixtures for tenants: fresh ones per test, and a transaction as one of them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swiftmail_core.db import tenant_tx
from swiftmail_core.runtime import Runtime
from swiftmail_core.tenants import create_tenant


@pytest.fixture
def make_tenant(runtime: Runtime) -> Callable[..., Any]:
    """Factory: create a tenant with a unique slug (``make_tenant("acme")``)."""

    def factory(prefix: str = "t") -> Any:
        return create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}")

    return factory


@pytest.fixture
def tenant_a(make_tenant: Callable[..., Any]) -> Any:
    """A fresh tenant."""
    return make_tenant("a")


@pytest.fixture
def tenant_b(make_tenant: Callable[..., Any]) -> Any:
    """Another fresh tenant."""
    return make_tenant("b")


@pytest.fixture
def tenant_database(tenant_a: Any) -> Iterator[Any]:
    """The app role's database inside ``tenant_tx`` of ``tenant_a`` (RLS applies).

    One transaction for the whole test, committed at its end: query tenant
    tables as the API does, see only ``tenant_a``'s rows. Services called
    inside it for the same tenant join it as savepoints.
    """
    with tenant_tx(tenant_a.id) as database:
        yield database
