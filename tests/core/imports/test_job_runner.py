"""The job runner: claims with SKIP LOCKED and a lease, retries, progress, failures."""

from __future__ import annotations

import io
import uuid

import pytest

from swiftmail_core import jobs
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.imports.service import create_import, open_error_report


def _drain(runtime) -> None:  # type: ignore[no-untyped-def]
    while jobs.run_pending_jobs(runtime, limit=50):
        pass


def test_uploaded_import_runs_as_a_job(runtime, tenant_a) -> None:
    storage = runtime.plugins.storage()
    upload = io.BytesIO(b"email,name\nq@example.com,Queued\nbroken,x\n")
    with tenant_tx(tenant_a.id):
        job = create_import(storage, "import_contacts", upload, {"map": {"name": "name"}})
    assert job.status == "queued"
    assert job.input_key.startswith(f"{tenant_a.id}/")
    assert storage.exists(job.input_key)
    _drain(runtime)
    with tenant_tx(tenant_a.id):
        done = jobs.get_job(job.id)
        report = open_error_report(storage, job.id).read().decode()
    assert done.status == "succeeded", done.error
    assert (done.rows_ok, done.rows_failed, done.progress_done) == (1, 1, done.progress_total)
    assert done.result_key.startswith(f"{tenant_a.id}/")
    assert "3,email must contain exactly one @,broken" in report
    assert not storage.exists(job.input_key)  # the upload is not kept once merged


def test_bad_upload_fails_the_job_with_its_reason(runtime, tenant_a) -> None:
    storage = runtime.plugins.storage()
    with tenant_tx(tenant_a.id):
        job = create_import(storage, "import_contacts", io.BytesIO(b"name\nx\n"), {})
    _drain(runtime)
    with tenant_tx(tenant_a.id):
        failed = jobs.get_job(job.id)
    assert failed.status == "failed"
    assert "no column maps to 'email'" in failed.error


def test_import_params_are_checked_before_queueing(runtime, tenant_a) -> None:
    storage = runtime.plugins.storage()
    with tenant_tx(tenant_a.id), pytest.raises(ValidationError, match="colour"):
        create_import(storage, "import_contacts", io.BytesIO(b"email\n"), {"colour": "red"})
    with tenant_tx(tenant_a.id), pytest.raises(ValidationError, match="is empty"):
        create_import(storage, "import_contacts", io.BytesIO(b""), {})


def test_claims_skip_locked_and_expired_leases_are_retried_then_abandoned(
    runtime, tenant_a
) -> None:
    _drain(runtime)
    with tenant_tx(tenant_a.id):
        job = jobs.create_job("export_suppressions", {})
    first = jobs.claim_jobs(10, owner="runner-1")
    assert (tenant_a.id, job.id) in first
    # held: a second runner does not get it
    assert (tenant_a.id, job.id) not in jobs.claim_jobs(10, owner="runner-2")

    def expire() -> None:
        with system_tx() as system:
            system.execute_sql(
                "UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                "WHERE tenant_id = %s AND id = %s", (str(tenant_a.id), str(job.id)),
            )

    for attempt in range(2, jobs.MAX_ATTEMPTS + 1):
        expire()  # runner died
        assert (tenant_a.id, job.id) in jobs.claim_jobs(10, owner=f"runner-{attempt}")
    expire()
    assert (tenant_a.id, job.id) not in jobs.claim_jobs(10, owner="runner-last")
    abandoned = jobs.load_job(tenant_a.id, job.id)
    assert abandoned.status == "failed"
    assert f"interrupted {jobs.MAX_ATTEMPTS} times" in abandoned.error


def test_progress_is_visible_while_the_tenant_transaction_is_open(runtime, tenant_a) -> None:
    with tenant_tx(tenant_a.id):
        job = jobs.create_job("export_contacts", {}, run_inline=True)
    heard: list[int] = []
    progress = jobs.Progress(tenant_a.id, job.id, 100, lambda done, total: heard.append(done))
    with tenant_tx(tenant_a.id):
        progress.update(40, force=True)
        assert jobs.load_job(tenant_a.id, job.id).progress_done == 40
    assert heard == [40]


def test_jobs_are_tenant_scoped(runtime, tenant_a, tenant_b) -> None:
    with tenant_tx(tenant_a.id):
        job = jobs.create_job("export_contacts", {})
    with tenant_tx(tenant_b.id):
        assert job.id not in [row.id for row in jobs.list_jobs(jobs.JOB_KINDS)]
    with tenant_tx(tenant_a.id):
        assert job.id in [row.id for row in jobs.list_jobs(jobs.JOB_KINDS)]


def test_new_contact_ids_are_time_ordered_uuid7(runtime, tenant_a, tmp_path) -> None:
    from swiftmail_core.db import app_db
    from swiftmail_core.imports.service import import_file

    path = tmp_path / "ids.csv"
    path.write_text("email\n" + "".join(f"id{i}@example.com\n" for i in range(50)))
    import_file(runtime, tenant_a.id, "import_contacts", path, {})
    with tenant_tx(tenant_a.id):
        ids = [uuid.UUID(str(row[0])) for row in app_db.execute_sql(
            "SELECT id FROM contacts ORDER BY email_lower COLLATE \"C\"").fetchall()]
    assert all(value.version == 7 and value.variant == uuid.RFC_4122 for value in ids)
    assert len(set(ids)) == 50
    assert ids == sorted(ids)  # assigned in the merge's (email) order


def test_heartbeat_renews_the_lease_during_long_work(runtime, tenant_a, monkeypatch) -> None:
    import time

    with tenant_tx(tenant_a.id):
        job = jobs.create_job("export_contacts", {}, run_inline=True)
    monkeypatch.setattr(jobs, "LEASE_SECONDS", 0.3)
    first = jobs.load_job(tenant_a.id, job.id)

    def lease() -> object:
        with system_tx() as system:
            return system.execute_sql(
                "SELECT lease_expires_at FROM jobs WHERE id = %s", (str(job.id),)
            ).fetchone()[0]

    before = lease()
    renewed = False
    with jobs.heartbeat(first.tenant_id, first.id):
        for _ in range(100):
            time.sleep(0.05)
            if lease() != before:
                renewed = True
                break
    # Finished, so its short lease cannot expire into the next test's claims.
    with tenant_tx(tenant_a.id):
        jobs.finish_job(job.id, rows_ok=0, rows_failed=0, result={}, result_key=None)
    assert renewed


def test_a_claim_of_one_job_leases_exactly_one(runtime, tenant_a) -> None:
    # Regression: the lease UPDATE's "id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)"
    # could be re-evaluated by the planner and lease more rows than asked for; the runner
    # ran only the first, and the others sat "running" until their lease expired (the
    # docs example's export answered 409 for four minutes).
    _drain(runtime)
    with tenant_tx(tenant_a.id):
        created = {jobs.create_job("export_suppressions", {}).id for _ in range(6)}

    def ours_running() -> int:
        with system_tx() as system:
            (running,) = system.execute_sql(
                "SELECT count(*) FROM jobs WHERE tenant_id = %s AND status = 'running'",
                (str(tenant_a.id),)).fetchone()
        return int(running)

    # The claim is cross-tenant: another test's job whose lease just expired may
    # take a round; what must hold is that each claim leases exactly one job.
    ours: set[object] = set()
    for round_ in range(12):
        claimed = jobs.claim_jobs(1, owner=f"runner-one-{round_}")
        assert len(claimed) <= 1, claimed
        ours |= {job for tenant, job in claimed if tenant == tenant_a.id}
        assert ours_running() == len(ours)
        if ours == created:
            break
    assert ours == created
