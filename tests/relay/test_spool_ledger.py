"""The spool's record of ledger rows taken: repeats dropped, crash gaps repaired, old records pruned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import urllib3
from swiftmail_relay import spool_ledger
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id
from swiftmail_relay.spool_ledger import (
    RepeatInFlightError,
    SpoolLedger,
    ledger_key,
    repair_spool,
    write_once,
)

RAW = b"From: n@sender.test\r\nTo: x@example.test\r\nSubject: s\r\n\r\nbody\r\n"


def _message(ledger_id: int, tenant: str = "t1", *more: int) -> tuple[Envelope, bytes]:
    recipients = [Recipient(f"r{i}@example.test", ledger_id=i) for i in (ledger_id, *more)]
    return Envelope(id=new_id(), mail_from="n@sender.test", tenant_id=tenant,
                    recipients=recipients, source="intake"), RAW


def test_a_repeated_ledger_row_is_answered_with_the_first_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    first = write_once(spool, [_message(1), _message(2)])
    assert [repeat for _, repeat in first] == [False, False]
    again = write_once(spool, [_message(2), _message(3), _message(1)])
    assert again == [(first[1][0], True), (again[1][0], False), (first[0][0], True)]
    assert len(list(spool.scan())) == 3
    assert sorted(spool.take_new()) == sorted([first[0][0], first[1][0], again[1][0]])


def test_the_record_is_per_tenant(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # APPSEC: one tenant's ledger id never answers for (or blocks) another tenant's row.
    spool = Spool(tmp_path)
    write_once(spool, [_message(7, "tenant-a")])
    assert write_once(spool, [_message(7, "tenant-b")])[0][1] is False
    assert len(list(spool.scan())) == 2


def test_a_partly_repeated_message_is_spooled_for_the_new_recipients(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    write_once(spool, [_message(1)])
    ((queue_id, repeat),) = write_once(spool, [_message(1, "t1", 2)])
    assert repeat is False
    assert [r.ledger_id for r in spool.read_envelope(queue_id).recipients] == [2]


def _racing(monkeypatch, spool, other):  # type: ignore[no-untyped-def]
    """Make the next stage let ``other`` be spooled while its own files wait in tmp/."""
    real_stage = Spool.stage

    def stage_then_race(self, items):  # type: ignore[no-untyped-def]
        staged = real_stage(self, items)
        monkeypatch.setattr(Spool, "stage", real_stage)
        write_once(spool, [other])
        return staged

    monkeypatch.setattr(Spool, "stage", stage_then_race)


def test_a_copy_racing_in_meanwhile_is_spooled_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    other = _message(5)
    _racing(monkeypatch, spool, other)
    assert write_once(spool, [_message(5), _message(6)])[0] == (other[0].id, True)
    assert len(list(spool.scan())) == 2 and os.listdir(spool.tmp) == []


def test_a_partial_copy_racing_in_is_refused_and_nothing_kept(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    _racing(monkeypatch, spool, _message(5))
    with pytest.raises(RepeatInFlightError):
        write_once(spool, [_message(5, "t1", 6)])
    assert len(list(spool.scan())) == 1 and os.listdir(spool.tmp) == []
    ((queue_id, repeat),) = write_once(spool, [_message(5, "t1", 6)])
    assert repeat is False
    assert [r.ledger_id for r in spool.read_envelope(queue_id).recipients] == [6]


def test_a_message_spooled_without_its_record_is_repaired(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A crash between the rename into queue/ and the record: the next start repairs.
    spool = Spool(tmp_path)
    ((queue_id, _),) = write_once(spool, [_message(9)])
    os.unlink(SpoolLedger(spool).dir / ledger_key("t1", 9))
    assert repair_spool(tmp_path) == 1
    assert write_once(spool, [_message(9)]) == [(queue_id, True)]


def test_a_writer_that_died_holding_the_lock_is_repaired_by_the_next(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    ledger = SpoolLedger(spool)

    class Died(BaseException):
        pass

    def die(self, pairs):  # type: ignore[no-untyped-def]
        (ledger.dir / spool_ledger.WRITING_NAME).touch()  # as a killed process leaves it
        raise Died

    real_record = SpoolLedger.record
    envelope, raw = _message(11)
    spool.commit(spool.stage([(envelope, raw)]))  # the message made it into queue/ ...
    monkeypatch.setattr(SpoolLedger, "record", die)
    with pytest.raises(Died), ledger.locked():
        ledger.record([])  # ... its record did not
    monkeypatch.setattr(SpoolLedger, "record", real_record)
    (ledger.dir / spool_ledger.WRITING_NAME).touch()
    assert write_once(spool, [_message(11)]) == [(envelope.id, True)]


def test_old_records_of_finished_messages_are_pruned(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path)
    (done, _), (queued, _) = write_once(spool, [_message(1), _message(2)])
    spool.remove(done)
    ledger = SpoolLedger(spool)
    assert ledger.prune(3600) == 0  # young
    later = time.time() + 7200
    assert ledger.prune(3600, now=later) == 1  # old and finished; the queued one stays
    assert ledger.find(ledger_key("t1", 1)) is None
    assert ledger.find(ledger_key("t1", 2)) == queued


def _intake_process(tmp_path: Path, port: int, **options: object) -> subprocess.Popen[bytes]:
    log = tmp_path / f"intake-{uuid.uuid4().hex[:6]}.log"
    config = {"data_dir": str(tmp_path), "spool_dir": str(tmp_path / "spool"), "port": port,
              "secret_key": SECRET_KEY, **options}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.relay.intake_child", json.dumps(config)],
            cwd=Path(__file__).resolve().parents[2], stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b"ready" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


SECRET_KEY = "intake-kill-test-" + "k" * 32


@pytest.mark.parametrize("sentinel_lost", [False, True])
def test_an_intake_killed_after_spooling_takes_the_resend_once(tmp_path, sentinel_lost) -> None:  # type: ignore[no-untyped-def]
    # kill -9 between the rename into queue/ and the ledger record (no answer sent): the
    # next writer repairs the record from the spool (it finds .writing), and so does the
    # restarted intake at start (the case of a machine crash that lost .writing).
    from swiftmail_relay.platform_auth import SIGNATURE_HEADER, platform_secrets, sign_request

    from swiftmail_core.settings import Settings
    from swiftmail_core.testing.smtp_sink import free_port
    from tests.relay.test_platform_intake import _batch

    secrets = platform_secrets(Settings(data_dir=tmp_path, secret_key=SECRET_KEY))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/spool"

    def post(body: bytes) -> urllib3.BaseHTTPResponse:
        return urllib3.request("POST", url, body=body, retries=False, timeout=10, headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: sign_request(secrets, body)})

    dying = _intake_process(tmp_path, port, die_after_commit=True)
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):  # the answer is lost
            post(_batch(3))
        assert dying.wait(10) == -9
    finally:
        if dying.poll() is None:
            dying.kill()
    spool = Spool(tmp_path / "spool")
    spooled = sorted(spool.scan())
    assert len(spooled) == 3  # durable, and no record of its rows yet:
    assert sorted(os.listdir(SpoolLedger(spool).dir)) == [".lock", ".writing"]
    if sentinel_lost:
        os.unlink(SpoolLedger(spool).dir / ".writing")
    restarted = _intake_process(tmp_path, port)
    try:
        response = post(_batch(3))  # the worker's resend: same ledger rows, new request
        assert response.status == 200, response.data
        answer = json.loads(response.data)
    finally:
        restarted.kill()
        restarted.wait(10)
    assert answer["repeats"] == [0, 1, 2] and sorted(answer["queue_ids"]) == spooled
    assert sorted(spool.scan()) == spooled  # each row once
