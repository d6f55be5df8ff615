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
    assert set(done) == {"jobs", "webhook_deliveries"}
