"""Benchmark: outbox claims per second on a Citus cluster against single-node PostgreSQL.

The same workload in the same run on both: ``--tenants`` tenants with
``--per-tenant`` due transactional messages each, claimed in batches of
``--batch`` by one process (``outbox.claim_batch``, tenant by tenant) and
every row reported accepted (``outbox.record_results``, one state-writer
transaction per tenant), until nothing is due. Single node: a scratch
database on the local PostgreSQL through ``swiftmail init``. Cluster: a
coordinator and two workers on this machine (``tests/citus/cluster.py``),
``swiftmail init --citus``, removed at the end.

Figures: ``single_rows_per_s`` and ``citus_rows_per_s`` (claimed and
recorded), ``ratio`` (cluster / single node), and the claim share of the
time on each. One 2-core machine cannot give the cluster more cores: the
ratio is the cost of coordination, not a speed-up.

    .venv/bin/python bench/citus_claims.py --tenants 8 --per-tenant 2000
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    MissingTool,
    Unfinished,
    arguments,
    drop_database,
    environment,
    per_second,
    ratio,
    run,
)

SMOKE = {"tenants": 3, "per_tenant": 200}


def _parser() -> argparse.ArgumentParser:
    parser = arguments(__doc__, SMOKE)
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--per-tenant", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--port-base", type=int, default=None,
                        help="the cluster's coordinator port (workers take the next ones); "
                             "free ports when not given")
    return parser


def _init(env: dict[str, str], *extra: str) -> None:
    from tests.cli_helpers import run_swiftmail

    done = run_swiftmail("init", "--yes", *extra, env=env, timeout=600)
    if done.returncode != 0:
        raise Unfinished(f"swiftmail init {' '.join(extra)} failed: {done.stderr[-500:]}")


def _measure(env: dict[str, str], tenants: int, per_tenant: int, batch: int) -> dict[str, Any]:
    """Queue the workload on the install of ``env``, claim and record all of it; time it."""
    from psycopg2.extras import execute_values

    from swiftmail_core.db import system_tx, tenant_tx
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.sending import due_tenants, outbox
    from swiftmail_core.settings import load_settings
    from swiftmail_core.tenants import create_tenant
    from swiftmail_core.transports import Outcome, SendResult

    runtime = start(load_settings(environ=env), process=ProcessKind.CLI)
    try:
        made = [create_tenant(f"bench-{index}-{secrets.token_hex(3)}") for index in range(tenants)]
        with system_tx() as database:
            database.execute_sql(
                "UPDATE tenants SET send_rate_per_second = 1000000, daily_quota = 100000000 "
                "WHERE id = ANY (%s::uuid[])", ([str(t.id) for t in made],))
        for tenant in made:
            with tenant_tx(tenant.id) as database:
                execute_values(
                    database.cursor(),
                    "INSERT INTO messages (tenant_id, email, kind, transport) VALUES %s",
                    [(str(tenant.id), f"r{i}@bench.example.test", "transactional", "none")
                     for i in range(per_tenant)], page_size=1000)
                due_tenants.mark_due(database, tenant.id)
        total = claimed_time = 0.0
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            # A fresh lease owner per batch, as the sending worker uses.
            claimed = outbox.claim_batch(f"bench-{secrets.token_hex(6)}", limit=batch)
            claimed_time += time.perf_counter() - before
            if not claimed:
                break
            outbox.record_results(claimed, [SendResult(c.ledger_id, Outcome.ACCEPTED)
                                            for c in claimed])
            total += len(claimed)
        elapsed = time.perf_counter() - started
        if total != tenants * per_tenant:
            raise Unfinished(f"claimed {int(total)} of {tenants * per_tenant} rows")
        return {"rows_per_s": round(per_second(int(total), elapsed), 1),
                "claim_share": round(claimed_time / elapsed, 3)}
    finally:
        runtime.close()


def work(args: argparse.Namespace) -> dict[str, Any]:
    """Run the workload on one node, then on the cluster; return both rates."""
    from tests.citus.cluster import CitusCluster, citus_installed

    if not citus_installed():
        raise MissingTool("citus.so is not installed: bash ../shared/vendor/citus/build.sh "
                          "(make test-citus builds it)")
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-citus-"))
    database = f"swiftmail_bench_claims_{secrets.token_hex(4)}"
    single_env = environment(workdir / "single", database)
    (workdir / "single").mkdir()
    try:
        _init(single_env)
        single = _measure(single_env, args.tenants, args.per_tenant, args.batch)
    finally:
        drop_database(database)
    cluster = CitusCluster(first_port=args.port_base)
    try:
        cluster.start()
        cluster.wait_ready()
        port = cluster.coordinator_port
        citus_env = {
            **single_env,
            "SWIFTMAIL_DATA_DIR": str(workdir / "citus"),
            "SWIFTMAIL_CONFIG": str(workdir / "citus" / "swiftmail.toml"),
            "DATABASE_URL": f"postgresql://127.0.0.1:{port}/swiftmail",
            "SWIFTMAIL_DATABASE_ADMIN_URL": cluster.admin_url(port),
            "SWIFTMAIL_CITUS_WORKERS": ",".join(f"127.0.0.1:{p}" for p in cluster.worker_ports),
        }
        (workdir / "citus").mkdir()
        _init(citus_env, "--citus")
        citus = _measure(citus_env, args.tenants, args.per_tenant, args.batch)
    finally:
        cluster.stop()
    return {
        "tenants": args.tenants, "per_tenant": args.per_tenant, "batch": args.batch,
        "single_rows_per_s": single["rows_per_s"], "citus_rows_per_s": citus["rows_per_s"],
        "ratio": ratio(citus["rows_per_s"], single["rows_per_s"]),
        "single_claim_share": single["claim_share"], "citus_claim_share": citus["claim_share"],
    }


if __name__ == "__main__":
    run("citus_claims", work, _parser())
