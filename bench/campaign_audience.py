"""Benchmark: audience resolution of a campaign to 1,000,000 subscribers.

Creates a scratch SwiftMail database on the local PostgreSQL (the same
``init`` path as production; dropped at the end), one tenant with two lists
(600k and 500k confirmed subscribers, 100k on both: 1,000,000 distinct
contacts, of which 1% suppressed and 1% unsubscribed; their ids
time-ordered as an import writes them, or with ``--contact-ids random`` in
no order, as a contact created before SwiftMail made ordered ids), then per
repeat, on a fresh campaign:

* floor: the same set query (active, confirmed on a list, not suppressed)
  written by one ``CREATE TEMP TABLE ... AS SELECT`` as the app role, no
  batching, no ledger indexes: PostgreSQL doing the bare set work;
* resolve: ``swiftmail_core.sending.audience.resolve_audience`` writing
  the ledger (``messages`` rows with all their indexes) in 50k batches.

With ``--local-send-time 09:00`` each repeat also resolves a second
campaign with that local send time (every contact has a ``timezone``
attribute, one of 24 zones, one in 1,000 invalid): each row's not-before
computed in the same statements (``sending.send_time``); reported with its
ratio to the plain resolve of the same repeat.

Each floor and resolve starts after a ``CHECKPOINT`` (one run's dirty
buffers do not land on the next one's clock) and is measured twice: wall
seconds and the CPU seconds of the scratch database's PostgreSQL backends
(read from ``/proc``, so on the machine running PostgreSQL; on Citus the
coordinator's): on a shared machine the CPU figure moves far less with
other people's load than the wall time.

Prints ONE JSON line with medians and the resolve/floor ratio (wall and
backend CPU). Target (issue #16): resolve under 12 s for 1,000,000, aim
within 5x of the floor.

``--server private`` measures on a PostgreSQL 15 of its own with the server
settings the Ansible role writes (``bench/_server.py``; Debian's default
``shared_buffers`` of 128 MB is smaller than a million-row ledger and its
indexes, so on the machine's server the resolve also writes back its own
evicted pages): the JSON line names the settings either way.

``--citus`` then does all of it again (populate, floor, resolve) in an
install on a Citus coordinator with two workers on this machine
(``bench/_citus.py``): the figures under ``citus`` and
``citus_vs_single_<figure>`` (single-node time / cluster time: above 1 the
cluster is faster).

    .venv/bin/python bench/campaign_audience.py [--subscribers 1000000] [--repeat 3]
        [--server private] [--citus]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _citus as citus  # noqa: E402
from bench import _server as server  # noqa: E402
from bench._common import (  # noqa: E402
    ADMIN_URL,
    BackendCpu,
    Unfinished,
    analyze,
    arguments,
    median,
    ratio,
    run,
    scratch_install,
)

TARGET_S = 12
AIM_RATIO = 5

#: The zones the contacts live in (with --local-send-time).
ZONES = ["UTC", "Europe/London", "Europe/Oslo", "Europe/Athens", "Europe/Moscow", "Asia/Dubai",
         "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Dhaka", "Asia/Bangkok",
         "Asia/Shanghai", "Asia/Tokyo", "Australia/Adelaide", "Australia/Sydney",
         "Pacific/Auckland", "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles",
         "America/Denver", "America/Chicago", "America/New_York", "America/Sao_Paulo",
         "Atlantic/Azores"]


def contacts_sql(contact_ids: str) -> str:
    """Return the statement that writes the contacts, their ids made as ``contact_ids`` says.

    ``imported``: time-ordered ids, as ``swiftmail import contacts`` writes
    them (``contact_ids.ORDERED_UUID_SQL``, in the file's order), so a
    range of ids lies on neighbouring heap pages; ``random``: the column's
    ``gen_random_uuid()``, contacts whose ids have no order (created before
    the import wrote ordered ids, for instance).
    """
    from swiftmail_core.contact_ids import ORDERED_UUID_SQL

    ordered = contact_ids == "imported"
    return (
        f"INSERT INTO contacts (tenant_id, {'id, ' if ordered else ''}"
        "email, name, attributes, status) "
        f"SELECT %s, {ORDERED_UUID_SQL + ', ' if ordered else ''}"
        "'user' || i || '@example.com', 'User ' || i, "
        "jsonb_build_object('first_name', 'F' || i, 'n', i, 'timezone', "
        "CASE WHEN i %% 1000 = 7 THEN 'Not/AZone' ELSE (%s::text[])[1 + i %% 24] END), "
        "CASE WHEN i %% 100 = 1 THEN 'unsubscribed' ELSE 'active' END "
        "FROM generate_series(0, %s - 1) AS i, LATERAL (SELECT i::bigint AS n) AS numbered")


def contacts_params(contact_ids: str, tenant: str, subscribers: int) -> tuple[Any, ...]:
    """Return the parameters of ``contacts_sql(contact_ids)``."""
    from swiftmail_core.contact_ids import ordered_uuid_bases

    bases = ordered_uuid_bases() if contact_ids == "imported" else ()
    return (tenant, *bases, ZONES, subscribers)


def populate(tenant_id: uuid.UUID, subscribers: int, contact_ids: str = "imported") -> list[str]:
    """Create contacts, two overlapping lists and suppressions; return the list ids.

    On Citus the contacts are written by the superuser: an ``INSERT ...
    SELECT`` from ``generate_series`` is run by Citus as a COPY into the
    shard, which row-level security refuses for the app role. This is the
    set-up, not what is measured.
    """
    from swiftmail_core.db import tenant_tx

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    split, overlap = int(subscribers * 0.5), int(subscribers * 0.1)
    tenant = str(tenant_id)
    on_citus = os.environ.get("SWIFTMAIL_CITUS") == "1"
    insert_contacts = contacts_sql(contact_ids)
    contacts = contacts_params(contact_ids, tenant, subscribers)
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, 'A'), (%s, %s, 'B')",
            (tenant, first, tenant, second))
        if not on_citus:
            database.execute_sql(insert_contacts, contacts)
    if on_citus:
        as_superuser(os.environ["DATABASE_URL"], insert_contacts, contacts)
    with tenant_tx(tenant_id) as database:
        # NOTE: tenant_id taken from the source row, one statement per list: Citus
        # pushes these down to the tenant's shard (a constant or a UNION would go
        # through the coordinator as a COPY, which row-level security refuses).
        for list_id, condition, bound in ((first, "<", split + overlap),
                                          (second, ">=", split)):
            database.execute_sql(
                "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                "SELECT tenant_id, %s::uuid, id, 'confirmed' FROM contacts "
                f"WHERE tenant_id = %s::uuid AND (attributes->>'n')::int {condition} %s",
                (list_id, tenant, bound))
        database.execute_sql(
            "INSERT INTO suppressions (tenant_id, email_lower, reason) "
            "SELECT tenant_id, email_lower, 'manual' FROM contacts "
            "WHERE tenant_id = %s AND (attributes->>'n')::int %% 100 = 2", (tenant,))
    return [first, second]


def as_superuser(database_url: str, statement: str, params: tuple[Any, ...]) -> None:
    """Run one statement in the database of ``database_url`` as the benchmark's superuser."""
    import psycopg2

    dsn = psycopg2.extensions.parse_dsn(database_url)
    admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
    dsn.update({k: v for k, v in admin.items() if k in ("user", "password")})
    connection = psycopg2.connect(**dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement, params)
    finally:
        connection.close()


def explain(tenant_id: uuid.UUID, list_ids: list[str], campaign_id: str) -> str:
    """Return the plan of the first audience batch (for the record)."""
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.sending.audience import _NIL, load_audience

    audience = load_audience(tenant_id, campaign_id)
    assert audience is not None
    sql, params = audience.batch(_NIL, None)
    with tenant_tx(tenant_id) as database:
        rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
    return "\n".join(row[0] for row in rows)


def new_campaign(tenant_id: uuid.UUID, list_ids: list[str],
                 local_send_time: str | None = None) -> str:
    """Create a sending campaign to the lists (optionally at a local send time)."""
    from swiftmail_core.db import tenant_tx

    campaign_id = str(uuid.uuid4())
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, list_ids, "
            "status, local_send_time) VALUES (%s, %s, 'Bench', 'Hi', '<p>x</p>', 'a@b.example', "
            "%s::uuid[], 'sending', %s)", (str(tenant_id), campaign_id, list_ids, local_send_time))
    return campaign_id


def local_figures(tenant_id: uuid.UUID, campaign_id: str) -> dict[str, Any]:
    """Return the local-time campaign's fallback count and how many hours its rows span."""
    from swiftmail_core.db import tenant_tx

    with tenant_tx(tenant_id) as database:
        (fallbacks,) = database.execute_sql(
            "SELECT timezone_fallbacks FROM campaigns WHERE id = %s", (campaign_id,)).fetchone()
        (hours,) = database.execute_sql(
            "SELECT count(DISTINCT date_trunc('hour', next_attempt_at, 'UTC')) FROM messages "
            "WHERE campaign_id = %s", (campaign_id,)).fetchone()
    return {"timezone_fallbacks": int(fallbacks), "distinct_send_hours": int(hours)}


def floor(tenant_id: uuid.UUID, list_ids: list[str]) -> tuple[float, int]:
    """Time the bare set query into a temp table (naming its tenant: a router query on Citus)."""
    from swiftmail_core.db import tenant_tx

    started = time.perf_counter()
    with tenant_tx(tenant_id) as database:
        cursor = database.execute_sql(
            "CREATE TEMP TABLE audience_floor ON COMMIT DROP AS "
            "SELECT c.id, c.email FROM contacts c "
            "WHERE c.tenant_id = %s AND c.status = 'active' AND EXISTS ("
            "SELECT 1 FROM subscriptions s WHERE s.tenant_id = c.tenant_id AND s.contact_id = c.id "
            "AND s.list_id = ANY (%s::uuid[]) AND s.status = 'confirmed') AND NOT EXISTS ("
            "SELECT 1 FROM suppressions x WHERE x.tenant_id = c.tenant_id "
            "AND x.email_lower = c.email_lower)", (str(tenant_id), list_ids))
        rows = cursor.rowcount
    return time.perf_counter() - started, rows


def measure(args: argparse.Namespace) -> Mapping[str, Any]:
    """Measure on one node (and with ``--citus`` then on a local cluster); return the figures."""
    if args.server == "private":
        return server.measure_on_private(__file__, args.server_port, sys.argv[1:])
    with scratch_install(args.keep) as env:
        figures = {"server": "machine", "server_settings": server.server_settings(ADMIN_URL),
                   **measure_install(args, env)}
    if args.citus:
        with citus.local_cluster(args.citus_port) as cluster, \
                citus.scratch_install(cluster) as env:
            on_cluster = measure_install(args, env)
        figures["citus"] = on_cluster
        figures.update(citus.compare(figures, on_cluster, {
            "resolve_s": False, "floor_create_table_as_s": False}))
    return figures


def measure_install(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Populate the install of ``env`` (in ``os.environ``), resolve, return the figures."""
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.sending.audience import resolve_audience
    from swiftmail_core.settings import load_settings
    from swiftmail_core.tenants import create_tenant

    runtime = start(load_settings(), process=ProcessKind.BENCH)
    tenant = create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
    setup_started = time.perf_counter()
    list_ids = populate(tenant.id, args.subscribers, args.contact_ids)
    setup_seconds = time.perf_counter() - setup_started
    analyze(env["DATABASE_URL"], "contacts, subscriptions, suppressions, messages")
    floors, resolves, counts, locals_ = [], [], [], []
    floor_cpus, resolve_cpus = [], []
    fallbacks: dict[str, Any] = {}
    cpu = BackendCpu(env["DATABASE_URL"])
    for _ in range(args.repeat):
        cpu.checkpoint()
        cpu.begin()
        seconds, expected = floor(tenant.id, list_ids)
        floor_cpus.append(cpu.end())
        floors.append(seconds)
        campaign_id = new_campaign(tenant.id, list_ids)
        if os.environ.get("SWIFTMAIL_BENCH_EXPLAIN"):
            print(explain(tenant.id, list_ids, campaign_id), file=sys.stderr)
        cpu.checkpoint()
        cpu.begin()
        started = time.perf_counter()
        count = resolve_audience(tenant.id, campaign_id, batch_size=args.batch)
        resolves.append(time.perf_counter() - started)
        resolve_cpus.append(cpu.end())
        if count != expected:
            raise Unfinished(f"resolved {count} recipients, the set query finds {expected}")
        counts.append(count)
        if args.local_send_time:
            campaign_id = new_campaign(tenant.id, list_ids, args.local_send_time)
            started = time.perf_counter()
            count = resolve_audience(tenant.id, campaign_id, batch_size=args.batch)
            locals_.append(time.perf_counter() - started)
            if count != expected:
                raise Unfinished(f"resolved {count} local-time recipients, not {expected}")
            fallbacks = local_figures(tenant.id, campaign_id)
    runtime.close()
    cpu.close()
    resolve, base = median(resolves, 4), median(floors, 4)
    resolve_cpu, base_cpu = median(resolve_cpus, 4), median(floor_cpus, 4)
    return {
        "subscribers": args.subscribers,
        "recipients": counts[-1],
        "repeat": args.repeat,
        "batch": args.batch,
        "contact_ids": args.contact_ids,
        "resolve_s": round(resolve, 2),
        "floor_create_table_as_s": round(base, 2),
        "ratio_vs_floor": ratio(resolve, base, 2),
        "ledger_rows_per_s": round(counts[-1] / resolve) if resolve else None,
        "target_s": TARGET_S,
        "meets_target": resolve < TARGET_S,
        "aim_ratio_vs_floor": AIM_RATIO,
        "meets_aim": bool(base) and resolve / base <= AIM_RATIO,
        "resolve_backend_cpu_s": round(resolve_cpu, 2),
        "floor_backend_cpu_s": round(base_cpu, 2),
        "cpu_ratio_vs_floor": ratio(resolve_cpu, base_cpu, 2),
        "backend_cpu_us_per_row": round(resolve_cpu / counts[-1] * 1e6, 1) if counts[-1] else None,
        "resolves_s": [round(value, 2) for value in resolves],
        "floors_s": [round(value, 2) for value in floors],
        "resolve_backend_cpus_s": [round(value, 2) for value in resolve_cpus],
        "floor_backend_cpus_s": [round(value, 2) for value in floor_cpus],
        "setup_s": round(setup_seconds, 1),
        **({"local_send_time": args.local_send_time,
            "resolve_local_s": round(median(locals_, 4), 2),
            "local_ratio_vs_resolve": ratio(median(locals_, 4), resolve, 2),
            "resolves_local_s": [round(value, 2) for value in locals_], **fallbacks}
           if args.local_send_time else {}),
    }


def parser() -> argparse.ArgumentParser:
    """Return the benchmark's arguments, ``--smoke`` included."""
    options = arguments(__doc__, smoke={"subscribers": 2_000, "repeat": 1, "batch": 500,
                                           "local_send_time": "09:00"})
    options.add_argument("--subscribers", type=int, default=1_000_000)
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--batch", type=int, default=50_000)
    options.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    options.add_argument("--local-send-time", default=None,
                         help="Also resolve a campaign at this local time (HH:MM).")
    options.add_argument("--contact-ids", choices=("imported", "random"), default="imported",
                         help="imported: time-ordered, as an import writes them (default); "
                              "random: gen_random_uuid(), ids with no order")
    citus.add_arguments(options)
    server.add_arguments(options)
    return options


if __name__ == "__main__":
    run("campaign_audience", measure, parser())
