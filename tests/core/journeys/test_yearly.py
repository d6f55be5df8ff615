"""Yearly date triggers: a birthday enrolls every year, exactly once a year, Feb 29 included."""

from __future__ import annotations

import contextlib
import datetime
import threading

import pytest

from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.journeys import enrollment
from swiftmail_core.journeys.definition import parse_trigger
from swiftmail_core.journeys.enrollment import dates_matching, enroll_date_triggers
from tests.core.journeys.conftest import email_step, make_contact, make_journey

BIRTHDAY = {"type": "date_attribute", "attribute": "birthday", "yearly": True}


@pytest.fixture(autouse=True)
def _archive_date_journeys(request):  # type: ignore[no-untyped-def]
    """Archive the test's journeys: the date trigger looks at every tenant's active ones."""
    tenant = (request.getfixturevalue("tenant_a") if "tenant_a" in request.fixturenames
              else None)
    yield
    if tenant is not None:
        with tenant_tx(tenant.id) as database:
            database.execute_sql("UPDATE journeys SET status = 'archived'")


def _mine(tenant_id, journey, day: str) -> int:  # type: ignore[no-untyped-def]
    """Run the date triggers for ``day``; return how many of this journey's enrollments exist."""
    enroll_date_triggers(_day(day))
    return len(_enrollments(tenant_id, journey))


def _day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def _enrollments(tenant_id, journey) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    with tenant_tx(tenant_id) as database:
        return [tuple(row) for row in database.execute_sql(
            "SELECT c.email, e.occurrence, e.trigger_data->>'years', e.trigger_data->>'date' "
            "FROM journey_enrollments e JOIN contacts c ON c.tenant_id = e.tenant_id "
            "AND c.id = e.contact_id WHERE e.journey_id = %s ORDER BY e.occurrence, c.email",
            (str(journey),))]


def _birthday_journey(tenant_id, **trigger):  # type: ignore[no-untyped-def]
    return make_journey(tenant_id, [{"type": "wait", "seconds": 366 * 86400},
                                    email_step("happy")], trigger={**BIRTHDAY, **trigger})


def test_a_birthday_enrolls_every_year_once(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    journey = _birthday_journey(tenant_a.id)
    make_contact(tenant_b.id, "ann@bday.test", birthday="1990-03-15")  # another tenant's
    make_contact(tenant_a.id, "ann@bday.test", birthday="1990-03-15")
    make_contact(tenant_a.id, "bob@bday.test", birthday="1990-03-16")
    make_contact(tenant_a.id, "notadate@bday.test", birthday="March 15")
    assert _mine(tenant_a.id, journey, "2026-03-15") == 1
    assert _mine(tenant_a.id, journey, "2026-03-15") == 1  # every tick of the day
    assert _mine(tenant_a.id, journey, "2026-03-16") == 2  # bob
    # next year again, while last year's enrollment is still waiting in the journey
    assert _mine(tenant_a.id, journey, "2027-03-15") == 3
    assert _enrollments(tenant_a.id, journey) == [
        ("ann@bday.test", 2026, "36", "1990-03-15"), ("bob@bday.test", 2026, "36", "1990-03-16"),
        ("ann@bday.test", 2027, "37", "1990-03-15")]


def test_february_29_fires_on_the_28th_in_common_years(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = _birthday_journey(tenant_a.id)
    make_contact(tenant_a.id, "leap@bday.test", birthday="2000-02-29")
    make_contact(tenant_a.id, "eve@bday.test", birthday="1999-02-28")
    for day in ("2027-02-27", "2027-02-28", "2027-03-01", "2028-02-28", "2028-02-29",
                "2028-03-01"):
        enroll_date_triggers(_day(day))
    assert _enrollments(tenant_a.id, journey) == [
        ("eve@bday.test", 2027, "28", "1999-02-28"), ("leap@bday.test", 2027, "27", "2000-02-29"),
        ("eve@bday.test", 2028, "29", "1999-02-28"), ("leap@bday.test", 2028, "28", "2000-02-29")]


def test_days_before_across_new_year_counts_the_anniversarys_year(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = _birthday_journey(tenant_a.id, days_before=7)
    make_contact(tenant_a.id, "jan@bday.test", birthday="1980-01-04")
    assert _mine(tenant_a.id, journey, "2026-12-28") == 1
    assert _mine(tenant_a.id, journey, "2027-01-04") == 1  # that anniversary is done
    assert _enrollments(tenant_a.id, journey) == [("jan@bday.test", 2027, "47", "1980-01-04")]


def test_exactly_once_across_a_crash_and_workers_racing(tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    journey = _birthday_journey(tenant_a.id)
    for n in range(20):
        make_contact(tenant_a.id, f"p{n}@race.test", birthday=f"19{50 + n}-07-01")
    real_tx = enrollment.tenant_tx

    @contextlib.contextmanager
    def dies_before_commit(tenant_id):  # type: ignore[no-untyped-def]
        with real_tx(tenant_id) as database:
            yield database
            raise KeyboardInterrupt("the worker dies before COMMIT")

    monkeypatch.setattr(enrollment, "tenant_tx", dies_before_commit)
    with pytest.raises(KeyboardInterrupt):
        enroll_date_triggers(_day("2026-07-01"))
    monkeypatch.setattr(enrollment, "tenant_tx", real_tx)
    assert _enrollments(tenant_a.id, journey) == []  # the crash left nothing
    done: list[bool] = []
    racers = [threading.Thread(target=lambda: done.append(enroll_date_triggers(
        _day("2026-07-01")) >= 0)) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert done == [True] * 4  # no racer failed on the unique key
    assert len(_enrollments(tenant_a.id, journey)) == 20
    assert {occurrence for _, occurrence, _, _ in _enrollments(tenant_a.id, journey)} == {2026}


def test_a_once_only_date_trigger_still_enrolls_once(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, [email_step("x")], trigger={
        "type": "date_attribute", "attribute": "trial_end", "days_before": 0})
    make_contact(tenant_a.id, "trial@bday.test", trial_end="2026-05-01")
    assert _mine(tenant_a.id, journey, "2026-05-01") == 1
    assert _mine(tenant_a.id, journey, "2027-05-01") == 1
    assert _enrollments(tenant_a.id, journey) == [("trial@bday.test", 0, None, "2026-05-01")]


def test_the_dates_a_day_matches() -> None:
    assert dates_matching(_day("2026-03-15"), False) == ["2026-03-15"]
    yearly = dates_matching(_day("2027-02-28"), True)
    assert "1900-02-28" in yearly and "2000-02-29" in yearly and "1900-02-29" not in yearly
    assert "2027-02-28" in yearly and not any(d.endswith("02-29") for d in
                                               dates_matching(_day("2028-02-28"), True))
    assert parse_trigger(BIRTHDAY).to_json() == {**BIRTHDAY, "days_before": 0}
    with pytest.raises(ValidationError) as caught:
        parse_trigger({**BIRTHDAY, "yearly": "yes"})
    assert caught.value.errors[0]["field"] == "trigger.yearly"
    with pytest.raises(ValidationError):
        parse_trigger({"type": "event", "name": "x", "yearly": True})
