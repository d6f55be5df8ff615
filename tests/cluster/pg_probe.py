"""A worker host of the cluster test: claims and state writes in a loop.

Usage: python -m tests.cluster.pg_probe MESSAGES SECONDS   (settings from the environment)

Queues MESSAGES transactional messages for a new tenant, then claims one
batch of one at a time and records it as accepted, as the worker does, one
JSON line per claim-and-record: ``{"t", "ok", "seconds", "error"}``. Its
last line is ``{"statuses": {...}}`` for the tenant's rows.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from swiftmail_core import db
from swiftmail_core.db.targets import database_targets
from swiftmail_core.settings import load_settings
from swiftmail_core.transports import Outcome, SendResult


def main(count: int, seconds: float) -> None:
    import faulthandler

    from swiftmail_core.sending import outbox
    from swiftmail_core.sending.lifecycle import send_transactional
    from swiftmail_core.tenants import create_tenant

    faulthandler.dump_traceback_later(25, repeat=True, file=sys.stderr)
    settings = load_settings()
    db.connect(database_targets(settings), pool_size=2,
               failover_wait_seconds=settings.db_failover_wait_seconds)
    tenant = create_tenant(f"probe-{uuid.uuid4().hex[:8]}")
    for index in range(count):
        send_transactional(tenant.id, to=f"r{index}@example.com", from_email="s@example.com",
                           subject="s", text="t")
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.time()
        error = None
        claimed = []
        try:
            claimed = outbox.claim_batch(f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}", limit=1)
            outbox.record_results(claimed,
                                  [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in claimed])
        except Exception as ex:  # every failure is a data point
            error = f"{type(ex).__name__}: {ex}"[:200]
        print(json.dumps({"t": started, "ok": error is None, "claimed": len(claimed),
                          "seconds": round(time.time() - started, 3), "error": error}),
              flush=True)
        if not claimed and error is None:
            break
        time.sleep(0.05)
    with db.system_tx() as database:
        rows = database.execute_sql("SELECT status, count(*) FROM messages WHERE tenant_id = %s "
                                    "GROUP BY status", (str(tenant.id),)).fetchall()
    print(json.dumps({"statuses": {status: int(n) for status, n in rows}}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
