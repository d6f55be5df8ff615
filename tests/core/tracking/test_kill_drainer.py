"""A drainer killed with SIGKILL loses nothing and counts nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.tracking_ingest import Hit, HitStream
from tests.core.tracking.conftest import make_sent_message

HITS = 4000
AGENTS = ("Mozilla/5.0 (Windows NT 10.0) Firefox/120.0", "Mozilla/5.0", "Barracuda Sentinel")


def _count(tenant_id) -> int:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        return app_db.execute_sql("SELECT count(*) FROM events").fetchone()[0]


def _rollups(tenant_id) -> dict:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT metric, dimension, sum(value) FROM campaign_rollups GROUP BY 1, 2"
        ).fetchall()
    return {(metric, dimension): int(value) for metric, dimension, value in rows}


def _recount(tenant_id) -> dict:  # type: ignore[no-untyped-def]
    """Recount the raw events the way the rollups count them."""
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT type || CASE WHEN is_machine THEN '.machine' ELSE '.human' END, "
            "count(*), count(DISTINCT message_id) FROM events GROUP BY 1"
        ).fetchall()
        links = app_db.execute_sql(
            "SELECT 'clicked' || CASE WHEN is_machine THEN '.machine' ELSE '.human' END, "
            "link_id, count(*), count(DISTINCT message_id) FROM events "
            "WHERE type = 'clicked' GROUP BY 1, 2"
        ).fetchall()
    expected: dict = {}
    for metric, total, unique in rows:
        kind, audience = metric.split(".")
        expected[(metric, "")] = total
        expected[(f"{kind}.unique.{audience}", "")] = unique
    for metric, link_id, total, unique in links:
        audience = metric.split(".")[1]
        expected[(metric, f"link:{link_id}")] = total
        expected[(f"clicked.unique.{audience}", f"link:{link_id}")] = unique
    return expected


def _drain(env: dict, stream: str, *extra: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("swiftmail")), "tracking", "drain",
               "--consumer", "killed-drainer", "--batch-size", "25", *extra]
    return subprocess.Popen(command, env={**env, "SWIFTMAIL_PLUGIN_TRACKING_STREAM": stream},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_restart_stores_every_hit_once(
    tenant_a, redis_client, run_id, test_environ
) -> None:
    messages = [make_sent_message(tenant_a.id) for _ in range(3)]
    stream = HitStream(redis_client, name=f"{run_id}:kill:{uuid.uuid4().hex[:8]}")
    stream.ensure_group()
    pipe = redis_client.pipeline(transaction=False)
    for n in range(HITS):
        m = messages[n % 3]
        kind = "click" if n % 4 == 0 else "open"
        pipe.xadd(stream.name, Hit(kind, m.tenant_id, m.message_id,
                                   link_id=m.link_id if kind == "click" else None,
                                   ip="203.0.113.9", user_agent=AGENTS[n % 3]).to_fields())
    pipe.execute()
    env = {**os.environ, **test_environ}
    try:
        first = _drain(env, stream.name)
        stored = 0
        while stored < HITS // 10 and first.poll() is None:
            time.sleep(0.02)
            stored = _count(tenant_a.id)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL, first.stderr.read().decode()[-2000:]
        stored_at_kill = _count(tenant_a.id)
        assert 0 < stored_at_kill <= HITS
        second = _drain(env, stream.name, "--once")
        _, errors = second.communicate(timeout=240)
        assert second.returncode == 0, errors.decode()[-2000:]
        assert _count(tenant_a.id) == HITS
        assert stream.backlog() == 0
        rollups = {k: v for k, v in _rollups(tenant_a.id).items()
                   if k[0].startswith(("opened", "clicked"))}
        assert rollups == _recount(tenant_a.id)
    finally:
        redis_client.delete(stream.name)
