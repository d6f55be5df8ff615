"""The worker's background task runs queued jobs and due webhook deliveries."""

from __future__ import annotations

from swiftmail_core import jobs
from swiftmail_core.db import tenant_tx
from swiftmail_core.exports.service import create_export
from swiftmail_core.sending.worker import SendingQueue


def test_background_runs_queued_jobs(runtime, tenant_a, run_id) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    settings = dataclasses.replace(runtime.settings, worker_queue_name=f"bg-{run_id}")
    queue = SendingQueue(settings, runtime.plugins)
    with tenant_tx(tenant_a.id):
        job = create_export("export_suppressions", {})
    done: dict[str, int] = {}
    for _ in range(20):  # other tests' queued jobs may be claimed first
        done = queue.run_background()
        with tenant_tx(tenant_a.id):
            if jobs.get_job(job.id).status == "succeeded":
                break
    with tenant_tx(tenant_a.id):
        assert jobs.get_job(job.id).status == "succeeded"
    assert set(done) == {"jobs", "journey_enrollments", "webhook_deliveries"}


def test_background_runs_due_journey_steps(runtime, tenant_a, run_id) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from swiftmail_core.journeys.enrollment import enroll_event
    from tests.core.journeys.conftest import (
        cancel_journey_mail,
        email_step,
        journey_mail,
        make_contact,
        make_journey,
    )

    settings = dataclasses.replace(runtime.settings, worker_queue_name=f"bg-j-{run_id}")
    queue = SendingQueue(settings, runtime.plugins)
    make_journey(tenant_a.id, [email_step("hello")])
    contact = make_contact(tenant_a.id, "bg@journey.test")
    with tenant_tx(tenant_a.id) as database:
        enroll_event(database, tenant_a.id, "signup", contact, {})
    assert queue.run_background()["journey_enrollments"] >= 1
    assert [m["step_id"] for m in journey_mail(tenant_a.id, contact)] == ["hello"]
    cancel_journey_mail()  # the journey's own tests send it; later tests' sinks must not
