"""Tenant paths are router queries on Citus: no multi-shard query from the API, worker or tracking.

Citus 13.2 logs every plan that splits into more than one task when
``citus.multi_task_query_log_level`` is set (at LOG level PostgreSQL adds the
statement to the server log). The test turns it on for the coordinator,
runs a tenant's API calls, its campaign through the worker, tracking
hits through the drainer, an import and an export through the job runner, a
webhook delivery and a journey step, and reads the coordinator's log: a multi-shard
statement by the app role (every tenant request) fails the test, and so does
one by the system role unless it is cross-tenant machinery on purpose, marked
``/* cross-tenant */`` in the code (the scheduler tick, finding due tenants and
rebuilding their hints).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg2
import pytest

from swiftmail_core.self_service.changes import unsubscribe
from swiftmail_core.sending import outbox, sweeper
from swiftmail_core.transports import Outcome, SendResult
from tests.citus.test_background import run_background_work
from tests.citus.test_sending import ledger_id, new_caller, run_until_idle, start_campaign

MARK = "/* cross-tenant */"
#: Known multi-shard statements outside the tenant paths' control, with why (none).
ALLOWED: dict[str, str] = {}
_ENTRY = re.compile(r"^\S+ \S+ \S+ \[\d+\] (?P<user>\S*) (?P<level>[A-Z]+):  (?P<text>.*)$")


def _set_log_level(cluster, level: str) -> None:  # type: ignore[no-untyped-def]
    connection = psycopg2.connect(cluster.admin_url(cluster.coordinator_port))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER SYSTEM SET citus.multi_task_query_log_level = '{level}'")
        cursor.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %u '")
        cursor.execute("SELECT pg_reload_conf()")
    connection.close()


def multi_shard_statements(log: str) -> list[tuple[str, str]]:
    """Return (user, statement) of every multi-task query in a server log excerpt."""
    found: list[tuple[str, str]] = []
    pending: str | None = None
    lines = log.splitlines()
    for index, line in enumerate(lines):
        entry = _ENTRY.match(line)
        if entry is None:
            continue
        if entry["level"] == "LOG" and "multi-task query about to be executed" in entry["text"]:
            pending = entry["user"]
        elif entry["level"] == "STATEMENT" and pending is not None:
            statement = [entry["text"]]
            for follow in lines[index + 1:]:
                if _ENTRY.match(follow):
                    break
                statement.append(follow)
            found.append((pending, " ".join(part.strip() for part in statement)))
            pending = None
    return found


@pytest.fixture
def multi_shard_log(citus_cluster):  # type: ignore[no-untyped-def]
    """Yield a function returning the multi-shard statements logged since the test began."""
    log = Path(citus_cluster.base) / "node0" / "log"
    _set_log_level(citus_cluster, "log")
    start = log.stat().st_size

    def read() -> list[tuple[str, str]]:
        with log.open(encoding="utf-8", errors="replace") as handle:
            handle.seek(start)
            return multi_shard_statements(handle.read())

    try:
        yield read
    finally:
        _set_log_level(citus_cluster, "off")


def test_tenant_paths_never_fan_out(cluster_app, citus_runtime, sink, run_id,  # type: ignore[no-untyped-def]
                                    multi_shard_log) -> None:
    import falcon.testing
    from swiftmail_web.public import create_tracking_app
    from swiftmail_web.public.services import PublicConfig, PublicServices

    from swiftmail_core import tokens
    from swiftmail_core.tracking_ingest import HitStream
    from swiftmail_core.tracking_ingest.drainer import Drainer

    settings, plugins, client, redis_client = cluster_app
    caller = new_caller(client, "router")
    campaign_id = start_campaign(caller, 5, "router.example.test")
    contact = caller.post("/v1/contacts", {"email": "one@router.example.test"})
    assert contact.status_code == 201, contact.text
    for path in ("/v1/lists", "/v1/contacts", "/v1/campaigns", f"/v1/campaigns/{campaign_id}",
                 f"/v1/contacts/{contact.json['id']}", "/v1/templates", "/v1/segments",
                 "/v1/suppressions", "/v1/webhooks"):
        assert caller.get(path).status_code == 200, path
    sent = caller.post("/v1/messages", {"to": "two@router.example.test", "transport": "sink",
                                        "from_email": "app@router.example.com",
                                        "subject": "Hi", "text": "Hello"})
    assert sent.status_code == 202, sent.text
    # An A/B test: its variants, the split, a winner by hand, the rest and the results.
    ab_list = caller.post("/v1/lists", {"name": "AB"}).json["id"]
    for index in range(4):
        assert caller.post(f"/v1/lists/{ab_list}/subscriptions",
                           {"email": f"ab{index}@router.example.test"}).status_code in (200, 201)
    ab = caller.post("/v1/campaigns", {
        "name": "AB", "subject": "Hello", "html": "<p>Hi</p>", "list_ids": [ab_list],
        "from_email": "news@sender.example.com", "transport": "sink"}).json["id"]
    assert client.simulate_put(f"/v1/campaigns/{ab}/ab", headers=caller.headers, json={
        "variants": [{"subject": "A"}, {"html": '<p><a href="https://example.com/b">B</a></p>'}],
        "test_percent": 50, "metric": "manual"}).status_code == 200
    assert caller.post(f"/v1/campaigns/{ab}/schedule").status_code == 200
    assert run_until_idle(settings, plugins) == 8
    assert caller.post(f"/v1/campaigns/{ab}/ab/winner", {"variant": "B"}).status_code == 200
    assert run_until_idle(settings, plugins) == 2
    assert caller.get(f"/v1/campaigns/{ab}/ab").json["variants"][1]["recipients"] == 3

    # Named status moves (sending.state.MOVES): pause, resume and cancel a campaign
    # whose ledger is written, resend a sent one's failed rows, an unsubscribe.
    moved = start_campaign(caller, 2, "moves.example.test")
    sweeper.tick(settings, plugins)
    for action in ("pause", "resume", "cancel"):
        answer = caller.post(f"/v1/campaigns/{moved}/{action}")
        assert answer.status_code == 200, (action, answer.text)
    assert caller.post(f"/v1/campaigns/{campaign_id}/resend-failed").status_code == 200
    unsubscribe(caller.tenant_id, uuid.UUID(contact.json["id"]), None, source="test")

    ledger = caller.get(f"/v1/campaigns/{campaign_id}/messages").json["data"]
    config = PublicConfig(stream=f"{run_id}:router-hits", redis_prefix=f"router-{run_id}:",
                          redis_timeout_ms=2000)
    services = PublicServices.build(settings, redis_client, plugins, config)
    services.stream.ensure_group()
    public = falcon.testing.TestClient(create_tracking_app(services))
    try:
        for row in ledger[:3]:
            token = tokens.make_open_token(settings.secret_key, caller.tenant_id,
                                           ledger_id(settings, caller, row))
            assert public.simulate_get(f"/t/o/{token}.gif").status_code == 200
        assert Drainer(HitStream(redis_client, config.stream), "router",
                       block_ms=10).drain_once() == 3
    finally:
        redis_client.delete(config.stream)
    for path in (f"/v1/campaigns/{campaign_id}/stats", f"/v1/analytics/campaigns/{campaign_id}",
                 f"/v1/campaigns/{campaign_id}/messages"):
        assert caller.get(path).status_code == 200, path

    # Background work: an import and an export, a webhook delivery, a journey step.
    run_background_work(caller, settings, citus_runtime)
    # A claim run again under its owner (a failover lost its answer) finds the same rows.
    assert caller.post("/v1/messages", {"to": "retry@router.example.test", "transport": "sink",
                                        "from_email": "app@router.example.com",
                                        "subject": "Hi", "text": "Hello"}).status_code == 202
    first = outbox.claim_batch("router-retry", limit=5)
    assert [c.ledger_id for c in outbox.claim_batch("router-retry", limit=5)] == [
        c.ledger_id for c in first] and len(first) == 1
    outbox.record_results(first, [SendResult(c.ledger_id, Outcome.ACCEPTED) for c in first])
    # Regression: that look for held rows read every shard on each claim (marked cross-tenant).
    assert [statement for _, statement in multi_shard_log()
            if "status = 'sending' AND lease_owner" in statement] == []

    fanned_out = [(user, statement) for user, statement in multi_shard_log()
                  if MARK not in statement and not any(key in statement for key in ALLOWED)]
    assert fanned_out == [], "\n".join(f"{user}: {statement[:300]}" for user, statement in fanned_out)
