"""The durable spool: write, read back, state, failures, rescan."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, Spool, SpoolError, new_id


def _envelope(*addresses: str) -> Envelope:
    return Envelope(
        id=new_id(), mail_from="sender@example.org",
        recipients=[Recipient(address) for address in addresses], tenant_id=None,
    )


def test_write_then_read_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    envelope = _envelope("a@example.com", "b@example.net")
    queue_id = spool.write(envelope, b"Subject: hi\r\n\r\nbody\r\n")
    assert list(spool.scan()) == [queue_id]
    read, raw = spool.read(queue_id)
    assert raw == b"Subject: hi\r\n\r\nbody\r\n"
    assert [r.address for r in read.recipients] == ["a@example.com", "b@example.net"]
    assert list(tmp_path.joinpath("tmp").iterdir()) == []


def test_state_overrides_envelope_and_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    envelope = _envelope("a@example.com", "b@example.net")
    queue_id = spool.write(envelope, b"x")
    envelope.recipients[0].status = DELIVERED
    spool.save_state(envelope)
    assert [r.address for r in spool.read_envelope(queue_id).pending] == ["b@example.net"]
    spool.remove(queue_id)
    assert list(spool.scan()) == []


def test_torn_state_falls_back_to_envelope(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    queue_id = spool.write(_envelope("a@example.com"), b"x")
    (spool.queue / f"{queue_id}.state").write_bytes(b"{not json")
    assert len(spool.read_envelope(queue_id).pending) == 1


def test_group_commit_writes_all(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    items = [(_envelope(f"r{i}@example.com"), b"m%d" % i) for i in range(50)]
    ids = spool.write_many(items)
    assert sorted(spool.scan()) == sorted(ids)


def test_a_batch_is_announced_by_one_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    single = spool.write(_envelope("one@example.com"), b"x")
    ids = spool.write_many([(_envelope(f"r{i}@example.com"), b"m") for i in range(50)])
    assert sorted(path.name for path in spool.new.iterdir()) == sorted(
        [single, f"{ids[0]}.ids"])
    assert sorted(spool.take_new()) == sorted([single, *ids])
    assert list(spool.new.iterdir()) == [] and list(spool.tmp.iterdir()) == []
    assert spool.take_new() == []


def test_envelope_json_is_what_asdict_gives(tmp_path: Path) -> None:
    envelope = _envelope("a@example.com", "b@example.net")
    envelope.warmup_plan = {"start_per_hour": 50}
    envelope.recipients[1].status = DELIVERED
    expected = json.dumps(dataclasses.asdict(envelope), separators=(",", ":")).encode()
    assert envelope.to_json() == expected
    assert Envelope.from_dict(json.loads(envelope.to_json())) == envelope


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_spool_raises_451(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.tmp.chmod(0o500)
    try:
        with pytest.raises(SpoolError) as caught:
            spool.write(_envelope("a@example.com"), b"x")
    finally:
        spool.tmp.chmod(0o700)
    assert caught.value.smtp_reply.startswith("451")


def test_full_filesystem_raises_452(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(SpoolError) as caught:
        spool.write(_envelope("a@example.com"), b"x")
    monkeypatch.setattr(os, "write", real_write)
    assert caught.value.smtp_reply.startswith("452")
    assert list(spool.scan()) == []


def test_missing_spool_directory_raises_451(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    os.rename(spool.queue, tmp_path / "gone")
    with pytest.raises(SpoolError) as caught:
        spool.write(_envelope("a@example.com"), b"x")
    assert caught.value.smtp_reply.startswith("451")
    assert list(spool.tmp.iterdir()) == []


def test_clear_tmp_removes_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    (spool.tmp / "partial").write_bytes(b"half")
    # An hour later (the file's ctime counts too, and utime cannot set that back).
    later = time.time() + 3600
    monkeypatch.setattr("swiftmail_relay.spool.time.time", lambda: later)
    assert spool.clear_tmp() == 1


def test_clear_tmp_keeps_a_file_another_process_is_writing(tmp_path: Path) -> None:
    # Regression: a relay starting on a spool deleted every file in tmp/, so a hand-off
    # worker's or an intake's write in progress failed.
    spool = Spool(tmp_path)
    (spool.tmp / "being-written").write_bytes(b"half")
    assert spool.clear_tmp() == 0
    assert (spool.tmp / "being-written").exists()


# Reuse of finished messages' files (free/) -----------------------------------------------


def _batch(count: int, body: bytes) -> list[tuple[Envelope, bytes]]:
    return [(_envelope(f"r{i}@example.com"), body + b"%d\r\n" % i) for i in range(count)]


def test_a_removed_message_file_is_reused_by_the_next_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.write_many(_batch(3, b"x" * 5000))
    inodes = {(spool.queue / f"{queue_id}.msg").stat().st_ino for queue_id in first}
    for queue_id in first:
        spool.remove(queue_id)
    assert sorted(path.name for path in spool.free.iterdir()) == sorted(first)
    items = _batch(3, b"short")  # shorter than the files they reuse: truncated
    second = spool.write_many(items)
    assert list(spool.free.iterdir()) == []
    assert {(spool.queue / f"{queue_id}.msg").stat().st_ino for queue_id in second} == inodes
    for (envelope, raw), queue_id in zip(items, second, strict=True):
        read, body = spool.read(queue_id)
        assert body == raw and read.id == envelope.id == queue_id
    assert sorted(spool.scan()) == sorted(second)
    assert list(spool.tmp.iterdir()) == []


def test_reused_files_are_durably_gone_from_the_queue_before_they_are_overwritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A crash must never leave a finished message's name on another message's bytes:
    # the spool's filesystem is flushed after taking files from free/, before writing.
    import swiftmail_relay.spool as spool_module

    spool = Spool(tmp_path)
    for queue_id in spool.write_many(_batch(2, b"old")):
        spool.remove(queue_id)
    events: list[str] = []
    real_sync, real_write = spool_module._sync_filesystem, os.write
    monkeypatch.setattr(spool_module, "_sync_filesystem",
                        lambda path: (events.append("sync"), real_sync(path))[1])
    monkeypatch.setattr(spool_module.os, "write",
                        lambda fd, data: (events.append("write"), real_write(fd, data))[1])
    spool.write_many(_batch(2, b"new"))
    assert events[0] == "sync" and events.count("sync") == 2 and "write" in events


def test_free_files_are_bounded_in_number_and_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import swiftmail_relay.spool as spool_module

    monkeypatch.setattr(spool_module, "FREE_LIMIT", 2)
    monkeypatch.setattr(spool_module, "FREE_MAX_BYTES", 1000)
    spool = Spool(tmp_path)
    small = spool.write_many(_batch(3, b"x"))
    large = spool.write(_envelope("big@example.com"), b"y" * 2000)
    spool.remove(large)  # too large to keep
    for queue_id in small:
        spool.remove(queue_id)
    assert len(list(spool.free.iterdir())) == 2
    assert list(spool.scan()) == []


def test_unused_free_files_are_emptied_and_still_reused(tmp_path: Path) -> None:
    # Delivered mail is not kept on disk once sending goes quiet: files in free/
    # unused for FREE_SCRUB_SECONDS are truncated (the relay's full scan does it).
    spool = Spool(tmp_path)
    finished = spool.write_many(_batch(2, b"private " * 100))
    for queue_id in finished:
        spool.remove(queue_id)
    assert spool.scrub_free() == 0  # just finished: a busy spool reuses them first
    assert all(path.stat().st_size > 0 for path in spool.free.iterdir())
    assert spool.scrub_free(0) == 2 and spool.scrub_free(0) == 0
    assert all(path.stat().st_size == 0 for path in spool.free.iterdir())
    items = _batch(2, b"next")
    for (envelope, raw), queue_id in zip(items, spool.write_many(items), strict=True):
        assert spool.read(queue_id) == (spool.read(queue_id)[0], raw)
        assert spool.read(queue_id)[0].id == envelope.id
    assert list(spool.free.iterdir()) == []


def test_two_writers_never_take_the_same_file(tmp_path: Path) -> None:
    spool, other = Spool(tmp_path), Spool(tmp_path)  # two processes on one spool
    for queue_id in spool.write_many(_batch(3, b"x")):
        spool.remove(queue_id)
    mine = spool._take_free(["a1", "a2"])
    theirs = other._take_free(["b1", "b2"])
    assert mine == {"a1", "a2"} and theirs == {"b1"}
    assert sorted(path.name for path in spool.tmp.iterdir()) == ["a1", "a2", "b1"]


def test_a_single_message_is_not_written_into_a_reused_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for queue_id in spool.write_many(_batch(2, b"x")):
        spool.remove(queue_id)
    spool.write(_envelope("one@example.com"), b"x")  # fsynced alone, no syncfs: no reuse
    assert len(list(spool.free.iterdir())) == 2


def test_a_reader_of_a_reused_file_is_told_the_message_is_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    gone, kept = spool.write_many(_batch(2, b"x"))
    # As if a reader opened ``gone`` just before its file was reused for ``kept``.
    os.replace(spool.queue / f"{kept}.msg", spool.queue / f"{gone}.msg")
    with pytest.raises(FileNotFoundError):
        spool.read_envelope(gone)
    with pytest.raises(FileNotFoundError):
        spool.read(gone)
