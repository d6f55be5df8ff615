"""Read a batch of one tenant's rows by id: one primary-key probe per id.

The hot paths name rows by id in batches (the state writer's lock, the
composer's contacts, the tracking drainer's ledger rows). Written as
``tenant_id = %s AND id = ANY (%s)``, the plan depends on what the
statistics say about the tenant: a tenant they do not know yet (a new
tenant's first campaign before autovacuum has analyzed its rows, which on a
big table can take hours; or any tenant of a new install before the first
pass) is one row to the planner, which then reads the tenant's rows by tenant
alone and filters them by id: every row of the tenant for every batch, a
campaign's reads growing with the square of its size.

``rows_by_key`` returns a ``FROM`` item that probes the primary key
``(tenant_id, id)`` once per id, in the order given: the ids are unnested and
each is looked up by a lateral sub-select that the planner cannot flatten into
a join (``OFFSET 0``, or the row lock). Within each probe the tenant is
compared with ``tenant_operand``: planned for a one-row tenant, a probe took
another index that starts with the tenant (``messages_campaign_idx``) and
walked all of the tenant's entries for each id. Its parameters are the ids,
then the tenant; every statement still names its tenant (one shard on Citus).
"""

from __future__ import annotations

from swiftmail_core.db.connection import is_distributed

#: Identifier types of the tables read this way.
ID_TYPES = ("bigint", "uuid")


def tenant_operand(value: str) -> str:
    """Return what a by-id statement compares ``tenant_id`` with (``value``: placeholder or literal).

    As a sub-select the tenant's value is unknown when the statement is
    planned, so the planner estimates an average tenant (the table's rows over
    its tenants), not the one row the statistics give a tenant they do not
    know, and it reads the rows by their key (0194 plans the claim the same
    way, with generic plans). On Citus the value stays a literal: the
    statement is routed to the tenant's shard by it.
    """
    return value if is_distributed() else f"(SELECT {value}::uuid)"


def rows_by_key(table: str, alias: str, *, id_type: str, lock: bool = False) -> str:
    """Return ``unnest(ids) CROSS JOIN LATERAL (one probe)`` as ``alias``; params: ids, tenant.

    ``lock``: lock each row ``FOR UPDATE`` as it is probed, in the order of
    the ids (sort them for a deterministic lock order).
    """
    if id_type not in ID_TYPES:
        raise ValueError(f"unsupported id type {id_type!r}")
    fence = "FOR UPDATE" if lock else "OFFSET 0"
    return (f"unnest(%s::{id_type}[]) AS wanted (id) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table} WHERE tenant_id = {tenant_operand('%s')} "
            f"AND id = wanted.id {fence}) AS {alias}")
