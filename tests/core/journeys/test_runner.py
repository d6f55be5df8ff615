"""Journeys run durably: each step once, in order, across exceptions and killed workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import psycopg2
import pytest

from swiftmail_core import parent_rows
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.journeys import runner
from swiftmail_core.journeys.enrollment import (
    JOURNEYS,
    enroll_event,
    enroll_subscribed,
    exit_contact,
)
from swiftmail_core.journeys.service import add_version
from tests.core.journeys.conftest import (
    email_step,
    enrollment,
    journey_mail,
    make_contact,
    make_due,
    make_journey,
)
from tests.core.lock_waits import RETRIED, race, race_tenant_delete
from tests.core.sending.conftest import make_list

WELCOME = [email_step("welcome"), {"id": "pause", "type": "wait", "seconds": 3600},
           email_step("tips")]


def _fire(tenant_id, contact_id, name="signup", **data):  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return enroll_event(database, tenant_id, name, contact_id, data)


def _step_runs(tenant_id, contact_id, columns="r.step, r.step_id"):  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return [tuple(row) for row in database.execute_sql(
            f"SELECT {columns} FROM journey_step_runs r JOIN journey_enrollments e "
            "ON e.tenant_id = r.tenant_id AND e.id = r.enrollment_id "
            "WHERE e.contact_id = %s ORDER BY r.step", (contact_id,))]


def test_an_event_enrolls_once_and_steps_run_in_order_with_waits(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    contact = make_contact(tenant_a.id, "ann@journey.test")
    assert _fire(tenant_a.id, contact, plan="pro") == [journey]
    assert _fire(tenant_a.id, contact, plan="other") == []  # a second firing enrolls once
    runner.run_due()
    mail = journey_mail(tenant_a.id, contact)
    assert [m["step_id"] for m in mail] == ["welcome"]
    assert mail[0]["status"] == "queued" and mail[0]["payload"]["data"]["plan"] == "pro"
    row = enrollment(tenant_a.id, journey, contact)
    assert (row["step"], row["status"], row["lease_owner"]) == (2, "active", None)
    runner.run_due()  # the wait is not over: nothing more
    assert len(journey_mail(tenant_a.id, contact)) == 1
    make_due(tenant_a.id)
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, contact)] == ["welcome", "tips"]
    assert enrollment(tenant_a.id, journey, contact)["status"] == "completed"
    assert _step_runs(tenant_a.id, contact) == [(0, "welcome"), (1, "pause"), (2, "tips")]


def test_an_exception_mid_step_leaves_no_trace_and_the_step_runs_once_later(
        tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    contact = make_contact(tenant_a.id, "boom@journey.test")
    _fire(tenant_a.id, contact)
    original = runner._send_email

    def send_then_fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)  # the ledger row is written...
        raise RuntimeError("worker fell over")  # ...and the transaction dies with it

    monkeypatch.setattr(runner, "_send_email", send_then_fail)
    runner.run_due()
    assert journey_mail(tenant_a.id, contact) == []
    row = enrollment(tenant_a.id, journey, contact)
    assert (row["step"], row["attempts"], row["lease_owner"]) == (0, 1, None)
    assert "worker fell over" in row["last_error"]
    monkeypatch.setattr(runner, "_send_email", original)
    make_due(tenant_a.id)
    runner.run_due()
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, contact)] == ["welcome"]
    assert enrollment(tenant_a.id, journey, contact)["attempts"] == 0


def test_a_worker_killed_mid_step_loses_nothing_and_sends_nothing_twice(
        tenant_a, test_environ) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    contact = make_contact(tenant_a.id, "killed@journey.test")
    _fire(tenant_a.id, contact)
    script = textwrap.dedent(f"""
        import os, signal
        from swiftmail_core.journeys import runner
        from swiftmail_core.runtime import ProcessKind, start
        from swiftmail_core.settings import load_settings

        start(load_settings(), process=ProcessKind.TEST)
        original = runner._send_email

        def send_then_die(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # before COMMIT

        runner._send_email = send_then_die
        claimed = runner.claim_due("doomed", 1000)
        for tenant, ident in claimed:
            if str(tenant) == {str(tenant_a.id)!r}:
                runner.run_enrollment(tenant, ident, "doomed")
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **test_environ},
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    row = enrollment(tenant_a.id, journey, contact)
    assert (row["step"], row["lease_owner"]) == (0, "doomed")
    assert journey_mail(tenant_a.id, contact) == []
    runner.run_due()  # the lease is still live: nobody else takes it
    assert journey_mail(tenant_a.id, contact) == []
    make_due(tenant_a.id)  # the lease expires: the claim reclaims it
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, contact)] == ["welcome"]
    assert _step_runs(tenant_a.id, contact) == [(0, "welcome"), (1, "pause")]


def test_concurrent_claims_never_share_an_enrollment(tenant_a) -> None:  # type: ignore[no-untyped-def]
    make_journey(tenant_a.id, WELCOME)
    for index in range(6):
        _fire(tenant_a.id, make_contact(tenant_a.id, f"c{index}@claims.test"))
    first = runner.claim_due("one", 1000)
    second = runner.claim_due("two", 1000)
    ours = {ident for tenant, ident in first if tenant == tenant_a.id}
    assert len(ours) == 6 and not ours & {ident for _, ident in second}
    for tenant, ident in second:  # someone else's lease: a run does nothing
        assert runner.run_enrollment(tenant, ident, "one") is None


def test_editing_makes_a_version_and_contacts_finish_on_theirs(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    early = make_contact(tenant_a.id, "early@versions.test")
    _fire(tenant_a.id, early)
    runner.run_due()
    with tenant_tx(tenant_a.id) as database:
        assert add_version(database, tenant_a.id, journey,
                           [email_step("new-welcome"), email_step("new-tips")]) == 2
    late = make_contact(tenant_a.id, "late@versions.test")
    _fire(tenant_a.id, late)
    make_due(tenant_a.id)
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, early)] == ["welcome", "tips"]
    assert [m["step_id"] for m in journey_mail(tenant_a.id, late)] == ["new-welcome",
                                                                       "new-tips"]
    assert enrollment(tenant_a.id, journey, early)["version"] == 1
    assert enrollment(tenant_a.id, journey, late)["version"] == 2


def test_branch_lists_and_exit(tenant_a) -> None:  # type: ignore[no-untyped-def]
    vip_list, old_list = make_list(tenant_a.id), make_list(tenant_a.id)
    steps = [
        {"id": "check", "type": "branch", "then": "vip",
         "condition": {"attribute": "plan", "op": "eq", "value": "pro"}},
        email_step("basic"),
        {"type": "exit"},
        {"id": "vip", "type": "add_to_list", "list_id": str(vip_list)},
        {"type": "remove_from_list", "list_id": str(old_list)},
        email_step("vip-mail"),
    ]
    journey = make_journey(tenant_a.id, steps)
    pro = make_contact(tenant_a.id, "pro@branch.test", plan="pro")
    free = make_contact(tenant_a.id, "free@branch.test", plan="free")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                             "VALUES (%s, %s, %s, 'confirmed')",
                             (str(tenant_a.id), str(old_list), pro))
    _fire(tenant_a.id, pro)
    _fire(tenant_a.id, free)
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, pro)] == ["vip-mail"]
    assert [m["step_id"] for m in journey_mail(tenant_a.id, free)] == ["basic"]
    assert enrollment(tenant_a.id, journey, pro)["status"] == "completed"
    free_row = enrollment(tenant_a.id, journey, free)
    assert (free_row["status"], free_row["exit_reason"]) == ("exited", "exit_step")
    with tenant_tx(tenant_a.id) as database:
        lists = {str(row[0]) for row in database.execute_sql(
            "SELECT list_id FROM subscriptions WHERE contact_id = %s AND status = 'confirmed'",
            (pro,))}
    assert lists == {str(vip_list)}


@pytest.mark.parametrize("how", ["unsubscribed", "suppressed", "exit_contact"])
def test_unsubscribed_or_suppressed_contacts_leave_at_once(tenant_a, how) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    contact = make_contact(tenant_a.id, f"{how}@leave.test")
    _fire(tenant_a.id, contact)
    with tenant_tx(tenant_a.id) as database:
        if how == "unsubscribed":
            database.execute_sql("UPDATE contacts SET status = 'unsubscribed' WHERE id = %s",
                                 (contact,))
        elif how == "suppressed":
            database.execute_sql("INSERT INTO suppressions (tenant_id, email_lower, reason) "
                                 "VALUES (%s, %s, 'manual')", (str(tenant_a.id),
                                                               f"{how}@leave.test"))
        else:
            assert exit_contact(database, tenant_a.id, contact, "unsubscribed") == 1
    runner.run_due()
    assert journey_mail(tenant_a.id, contact) == []
    assert enrollment(tenant_a.id, journey, contact)["status"] == "exited"


def test_a_confirmed_subscription_enrolls_once_and_only_in_its_tenant(
        tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    list_id = make_list(tenant_a.id)
    journey = make_journey(tenant_a.id, WELCOME,
                           trigger={"type": "list_subscribed", "list_id": str(list_id)})
    contact = make_contact(tenant_a.id, "sub@lists.test")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                             "VALUES (%s, %s, %s, 'unconfirmed')",
                             (str(tenant_a.id), str(list_id), contact))
        assert enroll_subscribed(database, tenant_a.id, [list_id], [contact]) == 0
        database.execute_sql("UPDATE subscriptions SET status = 'confirmed'")
        assert enroll_subscribed(database, tenant_a.id, [list_id], [contact]) == 1
        assert enroll_subscribed(database, tenant_a.id, [list_id], [contact]) == 0
    # tenant B cannot name A's list; naming A's contact enrolls nobody
    from swiftmail_core.errors import ValidationError

    with pytest.raises(ValidationError) as caught:
        make_journey(tenant_b.id, WELCOME, trigger={"type": "list_subscribed",
                                                    "list_id": str(list_id)})
    assert caught.value.errors[0]["field"] == "trigger.list_id"
    make_journey(tenant_b.id, WELCOME)
    with tenant_tx(tenant_b.id) as database:
        assert enroll_subscribed(database, tenant_b.id, [list_id], [contact]) == 0
        assert enroll_event(database, tenant_b.id, "signup", contact, {}) == []
    assert enrollment(tenant_a.id, journey, contact)["status"] == "active"


def test_a_journey_email_renders_through_the_campaign_renderer(runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.sending.compose import Composer

    step = {**email_step("welcome"), "html": "<p>Hi {{ contact.name }}, plan "
                                             "{{ contact.data.plan }}</p>"}
    make_journey(tenant_a.id, [step])
    contact = make_contact(tenant_a.id, "render@journey.test")
    _fire(tenant_a.id, contact, plan="gold")
    runner.run_due()
    (_mail,) = journey_mail(tenant_a.id, contact)
    with tenant_tx(tenant_a.id) as database:
        (ledger_id,) = database.execute_sql(
            "SELECT id FROM messages WHERE contact_id = %s", (contact,)).fetchone()
        html = Composer(runtime.settings, runtime.plugins).sent_html(database, tenant_a.id,
                                                                     ledger_id)
    assert "Hi N, plan gold" in html and "Unsubscribe" in html
    assert "/t/o/" in html  # the open pixel: opens count for stats and branches


def test_a_journey_emails_links_are_registered_and_rewritten_for_click_tracking(
        runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.sending.compose import Composer

    step = {**email_step("links"), "html": '<p><a href="https://example.com/x">x</a></p>'}
    make_journey(tenant_a.id, [step])
    contact = make_contact(tenant_a.id, "links@journey.test")
    _fire(tenant_a.id, contact)
    runner.run_due()
    with tenant_tx(tenant_a.id) as database:
        (ledger_id,) = database.execute_sql(
            "SELECT id FROM messages WHERE contact_id = %s", (contact,)).fetchone()
        html = Composer(runtime.settings, runtime.plugins).sent_html(database, tenant_a.id,
                                                                     ledger_id)
    assert 'href="https://example.com/x"' not in html and "/t/c/" in html and "/t/o/" in html


def test_unsubscribing_takes_the_contact_out_of_every_journey(tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core import self_service

    list_id = make_list(tenant_a.id)
    journeys = [make_journey(tenant_a.id, WELCOME) for _ in range(2)]
    contact = make_contact(tenant_a.id, "bye@journey.test")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                             "VALUES (%s, %s, %s, 'confirmed')",
                             (str(tenant_a.id), str(list_id), contact))
    _fire(tenant_a.id, contact)
    import uuid

    self_service.unsubscribe(tenant_a.id, uuid.UUID(contact), list_id, source="test")
    for journey in journeys:
        row = enrollment(tenant_a.id, journey, contact)
        assert (row["status"], row["exit_reason"]) == ("exited", "unsubscribed")


def test_branch_on_whether_the_previous_email_was_opened(tenant_a) -> None:  # type: ignore[no-untyped-def]
    steps = [email_step("first"), {"type": "wait", "seconds": 3600},
             {"id": "opened", "type": "branch", "previous_email": "opened", "then": "thanks"},
             email_step("reminder"), {"type": "exit"}, email_step("thanks")]
    make_journey(tenant_a.id, steps)
    reader = make_contact(tenant_a.id, "reader@prev.test")
    ignorer = make_contact(tenant_a.id, "ignorer@prev.test")
    machine = make_contact(tenant_a.id, "scanner@prev.test")
    for contact in (reader, ignorer, machine):
        _fire(tenant_a.id, contact)
    runner.run_due()
    with tenant_tx(tenant_a.id) as database:
        for contact, machine_open in ((reader, False), (machine, True)):
            (ledger_id,) = database.execute_sql(
                "SELECT id FROM messages WHERE contact_id = %s", (contact,)).fetchone()
            database.execute_sql(
                "INSERT INTO events (tenant_id, type, message_id, contact_id, is_machine) "
                "VALUES (%s, 'opened', %s, %s, %s)",
                (str(tenant_a.id), ledger_id, contact, machine_open))
    make_due(tenant_a.id)
    runner.run_due()
    sent = {contact: [m["step_id"] for m in journey_mail(tenant_a.id, contact)]
            for contact in (reader, ignorer, machine)}
    assert sent == {reader: ["first", "thanks"], ignorer: ["first", "reminder"],
                    machine: ["first", "reminder"]}


def test_wait_until_a_weekday_and_time_in_the_contacts_zone() -> None:
    import datetime

    from swiftmail_core.journeys.clock import next_time, zone

    friday_noon_utc = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
    until = {"time": "09:00", "weekdays": ["mon"]}
    assert next_time(friday_noon_utc, until, zone("Europe/Oslo")) == datetime.datetime(
        2026, 12, 7, 8, 0, tzinfo=datetime.UTC)
    assert next_time(friday_noon_utc, {"time": "09:00", "weekdays": ["fri", "sat"]},
                     zone("America/New_York")) == datetime.datetime(
        2026, 12, 4, 14, 0, tzinfo=datetime.UTC)  # 07:00 there: 09:00 the same Friday
    assert zone("Not/AZone") is datetime.UTC and zone(None) is datetime.UTC


def test_a_wait_until_step_sets_the_next_run_in_the_contacts_zone(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, [
        {"type": "wait", "until": {"time": "09:00"}}, email_step("morning")])
    contact = make_contact(tenant_a.id, "tz@journey.test", timezone="Asia/Tokyo")
    _fire(tenant_a.id, contact)
    runner.run_due()
    row = enrollment(tenant_a.id, journey, contact)
    import zoneinfo

    local = row["next_run_at"].astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert (row["step"], local.hour, local.minute) == (1, 9, 0)
    assert journey_mail(tenant_a.id, contact) == []


def test_one_failing_enrollment_does_not_roll_back_the_others_of_its_transaction(
        tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, WELCOME)
    good = make_contact(tenant_a.id, "good@batch.test")
    bad = make_contact(tenant_a.id, "bad@batch.test")
    _fire(tenant_a.id, good)
    _fire(tenant_a.id, bad)
    original = runner._send_email

    def fail_for_bad(database, position, step):  # type: ignore[no-untyped-def]
        ledger_id = original(database, position, step)
        if position.email == "bad@batch.test":
            raise RuntimeError("bad template data")
        return ledger_id

    monkeypatch.setattr(runner, "_send_email", fail_for_bad)
    claimed = [ident for tenant, ident in runner.claim_due("batch", 1000)
               if tenant == tenant_a.id]
    assert len(claimed) == 2
    results = runner.run_enrollments(tenant_a.id, claimed, "batch")
    assert sorted(results.values()) == ["active", "active"]
    assert [m["step_id"] for m in journey_mail(tenant_a.id, good)] == ["welcome"]
    assert journey_mail(tenant_a.id, bad) == []
    assert enrollment(tenant_a.id, journey, bad)["attempts"] == 1
    assert enrollment(tenant_a.id, journey, good)["step"] == 2


def test_a_date_attribute_enrolls_on_its_day_once(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    import datetime

    from swiftmail_core.journeys.enrollment import enroll_date_triggers

    journey = make_journey(tenant_a.id, [email_step("trial-ends")], trigger={
        "type": "date_attribute", "attribute": "trial_end", "days_before": 3})
    today = datetime.date(2031, 3, 10)
    due = make_contact(tenant_a.id, "due@dates.test", trial_end="2031-03-13")
    later = make_contact(tenant_a.id, "later@dates.test", trial_end="2031-03-14")
    theirs = make_contact(tenant_b.id, "due@dates.test", trial_end="2031-03-13")
    assert enroll_date_triggers(today) >= 1
    assert enroll_date_triggers(today) == 0  # once
    assert enrollment(tenant_a.id, journey, due)["trigger_data"] == {
        "attribute": "trial_end", "date": "2031-03-13"}
    assert enrollment(tenant_a.id, journey, later) == {}
    assert enrollment(tenant_b.id, journey, theirs) == {}
    enroll_date_triggers(today + datetime.timedelta(days=1))
    assert enrollment(tenant_a.id, journey, later)["status"] == "active"


def test_a_suppression_takes_the_contact_out_at_once(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.suppressions import SuppressionEntry, suppress

    journey = make_journey(tenant_a.id, WELCOME)
    contact = make_contact(tenant_a.id, "Bounced@Supp.test")
    other = make_contact(tenant_b.id, "bounced@supp.test")
    theirs = make_journey(tenant_b.id, WELCOME)
    _fire(tenant_a.id, contact)
    _fire(tenant_b.id, other)
    suppress([SuppressionEntry(tenant_a.id, "bounced@supp.test", "hard_bounce")])
    row = enrollment(tenant_a.id, journey, contact)
    assert (row["status"], row["exit_reason"]) == ("exited", "suppressed")
    assert enrollment(tenant_b.id, theirs, other)["status"] == "active"  # only that tenant


def test_previous_email_means_the_one_sent_in_the_same_run(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # the step runs of a run are written with its advance; a previous_email branch
    # right after an email must still see that email, not the one before it
    steps = [email_step("first"), {"type": "wait", "seconds": 3600}, email_step("second"),
             {"id": "opened", "type": "branch", "previous_email": "opened", "then": "thanks"},
             email_step("reminder"), {"type": "exit"}, email_step("thanks")]
    make_journey(tenant_a.id, steps)
    contact = make_contact(tenant_a.id, "same-run@prev.test")
    _fire(tenant_a.id, contact)
    runner.run_due()
    with tenant_tx(tenant_a.id) as database:
        (first,) = database.execute_sql(
            "SELECT id FROM messages WHERE contact_id = %s", (contact,)).fetchone()
        database.execute_sql(
            "INSERT INTO events (tenant_id, type, message_id, contact_id, is_machine) "
            "VALUES (%s, 'opened', %s, %s, false)", (str(tenant_a.id), first, contact))
    make_due(tenant_a.id)
    runner.run_due()
    assert [m["step_id"] for m in journey_mail(tenant_a.id, contact)] == [
        "first", "second", "reminder"]



def test_a_deleted_list_or_contact_leaves_no_subscription_behind(
        tenant_a) -> None:  # type: ignore[no-untyped-def]
    kept, dropped = make_list(tenant_a.id), make_list(tenant_a.id)
    steps = [{"id": "pause", "type": "wait", "seconds": 3600},
             {"id": "add", "type": "add_to_list", "list_id": str(kept)},
             {"id": "add-dropped", "type": "add_to_list", "list_id": str(dropped)}]
    journey = make_journey(tenant_a.id, steps)
    gone = make_contact(tenant_a.id, "gone@lists.test")
    stays = make_contact(tenant_a.id, "stays@lists.test")
    _fire(tenant_a.id, gone)
    _fire(tenant_a.id, stays)
    runner.run_due()
    with tenant_tx(tenant_a.id) as database:
        assert parent_rows.delete_contact(database, tenant_a.id, gone)
        parent_rows.delete_list(database, tenant_a.id, dropped)
    make_due(tenant_a.id)
    runner.run_due()
    assert enrollment(tenant_a.id, journey, gone) == {}  # its enrollment went with it
    assert _step_runs(tenant_a.id, stays, "r.step_id, r.outcome") == [
        ("pause", "waited"), ("add", "added"), ("add-dropped", "list_missing")]
    assert enrollment(tenant_a.id, journey, stays)["status"] == "completed"
    with tenant_tx(tenant_a.id) as database:
        rows = {(str(list_id), str(contact_id)) for list_id, contact_id in database.execute_sql(
            "SELECT list_id, contact_id FROM subscriptions")}
    assert rows == {(str(kept), stays)}


def test_deleting_a_contact_while_its_add_to_list_step_runs_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the runner holds the enrollment FOR UPDATE and then locks the
    # contact (FOR KEY SHARE) for the subscription; the delete took the contact
    # first and then, cascading, the enrollment: PostgreSQL killed one (40P01).
    target = make_list(tenant_a.id)
    make_journey(tenant_a.id, [{"id": "add", "type": "add_to_list", "list_id": str(target)}])
    contact = make_contact(tenant_a.id, "deleted@deadlock.test")
    _fire(tenant_a.id, contact)
    holding, go = threading.Event(), threading.Event()
    original = parent_rows.lock_contacts

    def paused_lock_contacts(database, tenant_id, contact_ids):  # type: ignore[no-untyped-def]
        if [str(ident) for ident in contact_ids] == [contact]:
            holding.set()  # the enrollment is locked by now
            assert go.wait(60)
        return original(database, tenant_id, contact_ids)

    monkeypatch.setattr(parent_rows, "lock_contacts", paused_lock_contacts)
    deleter_pid: list[int] = []

    def delete() -> None:
        with tenant_tx(tenant_a.id) as database:
            deleter_pid.append(database.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
            assert parent_rows.delete_contact(database, tenant_a.id, contact)

    def delete_waits() -> None:
        watcher = psycopg2.connect(targets.dsn("app"))  # sees its own role's sessions
        try:
            with watcher.cursor() as cursor:  # until the delete waits for a row lock
                for _ in range(600):
                    if deleter_pid:
                        cursor.execute("SELECT wait_event_type FROM pg_stat_activity "
                                       "WHERE pid = %s", (deleter_pid[0],))
                        if cursor.fetchone()[0] == "Lock":
                            return
                    watcher.rollback()  # a fresh activity snapshot
                    time.sleep(0.05)
        finally:
            watcher.close()
        raise AssertionError("the delete never waited for the running step")

    running, deleting = race(runner.run_due, delete, holds=lambda: holding.wait(60),
                             waits=delete_waits, release=go.set)
    assert (running, deleting) == ([], [])
    assert "running them one by one" not in caplog.text  # the step's batch did not fail
    with tenant_tx(tenant_a.id) as database:
        left = [database.execute_sql(f"SELECT count(*) FROM {table} WHERE contact_id = %s",
                                     (contact,)).fetchone()[0]
                for table in ("journey_enrollments", "subscriptions")]
        left.append(database.execute_sql("SELECT count(*) FROM contacts WHERE id = %s",
                                         (contact,)).fetchone()[0])
    assert left == [0, 0, 0]



def _delete_tenant_while_paused(tenant, targets, monkeypatch, owner,  # type: ignore[no-untyped-def]
                                name: str) -> tuple[list[BaseException], list[BaseException]]:
    """Run ``run_due`` paused in ``owner.name`` for ``tenant`` while the tenant is deleted.

    The delete starts once the runner is paused and is let go once it waits
    for a row lock; returns the runner's errors and the delete's.
    """
    holding, go = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def paused(database, tenant_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(tenant_id) == str(tenant.id):
            holding.set()
            assert go.wait(60)
        return original(database, tenant_id, *args, **kwargs)

    monkeypatch.setattr(owner, name, paused)
    return race_tenant_delete(runner.run_due, tenant.id, targets.dsn("system"), holding, go)


def _tenant_rows_left(tenant_id) -> list[int]:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        return [database.execute_sql(f"SELECT count(*) FROM {table} WHERE {column} = %s",
                                     (str(tenant_id),)).fetchone()[0]
                for table, column in (("tenants", "id"), ("journey_enrollments", "tenant_id"),
                                      ("due_tenants", "tenant_id"), ("contacts", "tenant_id"))]


def test_deleting_a_tenant_while_its_journey_step_runs_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the runner held its enrollments FOR UPDATE and then, writing
    # their step runs (a foreign key to tenants), locked the tenant FOR KEY
    # SHARE; the tenant's DELETE locked the tenant and then, cascading, the
    # enrollments: PostgreSQL killed the delete (40P01).
    make_journey(tenant_a.id, [{"id": "pause", "type": "wait", "seconds": 3600}])
    _fire(tenant_a.id, make_contact(tenant_a.id, "gone@deadlock.test"))
    assert _delete_tenant_while_paused(
        tenant_a, targets, monkeypatch, runner, "_write_deferred") == ([], [])
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry
    assert "running them one by one" not in caplog.text  # the step's batch did not fail
    assert _tenant_rows_left(tenant_a.id) == [0, 0, 0, 0]


def test_deleting_a_tenant_while_its_enrollments_are_claimed_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the claim held the leased enrollments and then updated the
    # tenant's due-tenant hint; the tenant's DELETE cascaded to the hint first
    # and then to the enrollments (40P01).
    make_journey(tenant_a.id, [{"id": "pause", "type": "wait", "seconds": 3600}])
    _fire(tenant_a.id, make_contact(tenant_a.id, "claimed@deadlock.test"))
    assert _delete_tenant_while_paused(
        tenant_a, targets, monkeypatch, JOURNEYS, "settle_within") == ([], [])
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry
    assert _tenant_rows_left(tenant_a.id) == [0, 0, 0, 0]
