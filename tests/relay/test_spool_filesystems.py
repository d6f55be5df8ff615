"""The spool on real filesystems that are full or read-only (tmpfs mounts).

Mounting needs root (CI runs as root); elsewhere these tests skip, and
tests/relay/test_spool.py covers the same replies with simulated errors.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from swiftmail_relay.spool import Spool, SpoolError

from tests.relay.test_spool import _envelope


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True, check=False,
    )
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_filesystem_answers_452_and_keeps_nothing(small_tmpfs: Path) -> None:
    spool = Spool(small_tmpfs / "spool")
    with pytest.raises(SpoolError) as caught:
        for _ in range(100):
            spool.write(_envelope("a@example.com"), os.urandom(16 * 1024))
    assert caught.value.smtp_reply.startswith("452")
    assert list(spool.tmp.iterdir()) == []  # no half-written file left behind
    for queue_id in spool.scan():  # whatever got a 250 is whole
        assert spool.read_envelope(queue_id).pending


def test_read_only_filesystem_answers_451(small_tmpfs: Path) -> None:
    spool = Spool(small_tmpfs / "spool")
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(SpoolError) as caught:
        spool.write(_envelope("a@example.com"), b"hello")
    assert caught.value.smtp_reply.startswith("451")
