"""The whole single-node isolation suite (``tests/core/test_isolation.py``), run on the cluster.

The same test functions, collected a second time here with the fixtures they
use (``settings``, ``targets``, ``runtime``; the connections and tenants
derive from them) pointed at the Citus coordinator after ``swiftmail init
--citus``: every tenant table read, updated and deleted across tenants as the
app role, no tenant, another tenant's id, 2,000 interleaved transactions on
one pooled connection, nesting, privileges and the posture audit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.runtime import Runtime
from swiftmail_core.settings import Settings
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
