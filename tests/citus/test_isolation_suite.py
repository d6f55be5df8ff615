"""The whole single-node isolation suite (``tests/core/test_isolation.py``), run on the cluster.

The same test functions, collected a second time here with the fixtures they
use (``settings``, ``targets``, ``runtime``; the connections and tenants
derive from them) pointed at the Citus coordinator after ``swiftmail init
--citus``: every tenant table read, updated and deleted across tenants as the
app role, no tenant, another tenant's id, 2,000 interleaved transactions on
one pooled connection, nesting, privileges and the posture audit.

The cluster is shared by the whole Citus session and the seeded rows are due
work (queued messages, active journey enrollments), which the cross-tenant
runners of later tests would claim: every tenant made here is deleted (with
its rows, by cascade) when its test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.runtime import Runtime
from swiftmail_core.settings import Settings
from swiftmail_core.tenants import create_tenant, delete_tenant
from tests.core.test_isolation import (  # noqa: F401 - collected here against the cluster
    seeded,
    test_app_role_cannot_truncate_or_read_users,
    test_interleaved_transactions_on_one_connection,
    test_posture_audit_catches_a_rogue_table,
    test_posture_audit_passes,
    test_seed_covers_every_tenant_table,
    test_tenant_sees_reads_updates_deletes_nothing_of_another,
    test_tenant_tx_of_the_same_tenant_joins_the_open_one,
    test_tenant_tx_refuses_nesting_and_bad_ids,
    test_without_tenant_selects_see_nothing_and_inserts_fail,
    test_writing_another_tenants_id_is_refused,
)


@pytest.fixture(scope="session")
def settings(citus_runtime: Runtime) -> Settings:
    """The cluster install's settings (overrides the single-node fixture)."""
    return citus_runtime.settings


@pytest.fixture(scope="session")
def targets(citus_runtime: Runtime) -> DatabaseTargets:
    """The cluster install's database targets (overrides the single-node fixture)."""
    return database_targets(citus_runtime.settings)


@pytest.fixture(scope="session")
def runtime(citus_runtime: Runtime) -> Iterator[Runtime]:
    """The runtime connected to the coordinator (overrides the single-node fixture)."""
    yield citus_runtime


@pytest.fixture
def make_tenant(runtime: Runtime) -> Iterator[Callable[..., Any]]:
    """Like the single-node factory; deletes the tenants it made when the test ends."""
    made: list[Any] = []

    def factory(prefix: str = "t") -> Any:
        made.append(create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}"))
        return made[-1]

    yield factory
    for tenant in made:
        delete_tenant(str(tenant.id))
