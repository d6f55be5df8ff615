"""Reputation guards: rolling bounce/complaint rates pause a tenant; an operator resumes it."""

from __future__ import annotations

import uuid

from swiftmail_relay import reputation
from swiftmail_relay.outcomes import Outcome, record_outcomes

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import due_tenants, outbox
from tests.cli_helpers import run_swiftmail


def _sent_rows(tenant_id, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        rows = database.execute_sql(
            "INSERT INTO messages (tenant_id, email, kind, status, transport, sent_at) "
            "SELECT %s, 'u' || g || '@r.example', 'transactional', 'accepted', 'relay', now() "
            "FROM generate_series(1, %s) g RETURNING id, email",
            (str(tenant_id), count)).fetchall()
    return [(int(i), e) for i, e in rows]


def _report(tenant_id, rows, kind: str, bounce_class: str | None, plugins) -> None:  # type: ignore[no-untyped-def]
    record_outcomes([
        Outcome(tenant_id=tenant_id, type=kind, email=email, ledger_id=ident,
                bounce_class=bounce_class, reply="550 5.1.1 no such user" if bounce_class else "",
                source_key=f"test:{ident}:{kind}:{uuid.uuid4().hex[:6]}")
        for ident, email in rows], plugins)


def _queued(tenant_id) -> int:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        ledger_id = int(database.execute_sql(
            "INSERT INTO messages (tenant_id, email, kind, status, transport) "
            "VALUES (%s, 'next@r.example', 'transactional', 'queued', 'relay') RETURNING id",
            (str(tenant_id),)).fetchone()[0])
        due_tenants.mark_due(database, tenant_id)
        return ledger_id


def _events(tenant_id, kind: str) -> list[dict]:  # type: ignore[type-arg, no-untyped-def]
    with system_tx() as database:
        return [row[0] for row in database.execute_sql(
            "SELECT detail FROM events WHERE tenant_id = %s AND type = %s",
            (str(tenant_id), kind)).fetchall()]


def test_hard_bounces_above_five_percent_pause_sending_until_resumed(  # type: ignore[no-untyped-def]
    runtime, tenant_a, tenant_b, test_environ,
) -> None:
    rows = _sent_rows(tenant_a.id, 200)  # the default minimum sample
    _report(tenant_a.id, rows[:190], "delivered", None, runtime.plugins)
    _report(tenant_a.id, rows[190:200], "bounced", "hard", runtime.plugins)
    assert reputation.open_pause(tenant_a.id) is None  # 10/200 = 5.0 %, not above
    _report(tenant_a.id, rows[189:190], "bounced", "soft", runtime.plugins)
    assert reputation.open_pause(tenant_a.id) is None  # soft bounces do not count
    more = _sent_rows(tenant_a.id, 1)
    _report(tenant_a.id, more, "bounced", "hard", runtime.plugins)  # 11/201
    pause = reputation.open_pause(tenant_a.id)
    assert pause is not None and "hard bounce rate 5.47%" in pause["reason"], pause
    (event,) = _events(tenant_a.id, "sending_paused")
    assert event["hard_bounces"] == 11 and event["sends"] == 201

    # Paused: the outbox claims nothing for this tenant, and still claims for others.
    paused_row, other_row = _queued(tenant_a.id), _queued(tenant_b.id)
    claimed = {(c.tenant_id, c.ledger_id) for c in outbox.claim_batch(limit=1000)}
    assert (tenant_a.id, paused_row) not in claimed
    assert (tenant_b.id, other_row) in claimed

    shown = run_swiftmail("relay", "reputation", tenant_a.slug, env=test_environ)
    assert shown.returncode == 0 and "PAUSED" in shown.stdout, shown.stderr
    resumed = run_swiftmail("relay", "resume-tenant", tenant_a.slug, env=test_environ)
    assert resumed.returncode == 0 and "resumed sending" in resumed.stdout, resumed.stderr
    assert reputation.open_pause(tenant_a.id) is None
    assert len(_events(tenant_a.id, "sending_resumed")) == 1
    again = run_swiftmail("relay", "resume-tenant", tenant_a.slug, env=test_environ)
    assert again.returncode != 0 and "not paused" in again.stderr
    assert "Traceback" not in again.stderr
    # The window restarts at the resume: old bounces do not pause it again.
    fresh = _sent_rows(tenant_a.id, 1)
    _report(tenant_a.id, fresh, "bounced", "hard", runtime.plugins)
    assert reputation.open_pause(tenant_a.id) is None


def test_complaints_above_the_threshold_pause_once(runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    limits = reputation.Thresholds(window=1000, min_sample=100, max_complaint_rate=0.001)
    rows = _sent_rows(tenant_a.id, 1000)
    _report(tenant_a.id, rows[:1], "complained", None, runtime.plugins)  # 0.1 %: at the limit
    assert reputation.check([tenant_a.id], limits, runtime.plugins) == []
    _report(tenant_a.id, rows[1:2], "complained", None, runtime.plugins)  # checked at once
    assert reputation.open_pause(tenant_a.id) is not None
    assert reputation.check([tenant_a.id], limits, runtime.plugins) == []  # already paused
    assert "complaint rate 0.20%" in reputation.open_pause(tenant_a.id)["reason"]
    assert len(_events(tenant_a.id, "sending_paused")) == 1


def test_a_small_sample_never_pauses(runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    rows = _sent_rows(tenant_a.id, 10)
    _report(tenant_a.id, rows, "bounced", "hard", runtime.plugins)  # 100 %, 10 sends
    assert reputation.open_pause(tenant_a.id) is None


def test_tenant_sees_its_pause_but_not_others(runtime, tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    limits = reputation.Thresholds(window=10, min_sample=1, max_bounce_rate=0.0)
    rows = _sent_rows(tenant_a.id, 1)
    _report(tenant_a.id, rows, "bounced", "hard", runtime.plugins)
    reputation.check([tenant_a.id], limits, runtime.plugins)
    with tenant_tx(tenant_a.id) as database:
        assert database.execute_sql("SELECT count(*) FROM sending_pauses").fetchone()[0] == 1
    with tenant_tx(tenant_b.id) as database:
        assert database.execute_sql("SELECT count(*) FROM sending_pauses").fetchone()[0] == 0
