"""The embedded default: nothing configured, real PostgreSQL and Redis in a data dir."""

from __future__ import annotations

import re

import pytest

from swiftmail_core import embedded
from tests.cli_helpers import run_swiftmail


@pytest.fixture
def empty_data_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    # Short path: PostgreSQL's unix socket path is limited to 107 bytes.
    path = tmp_path_factory.mktemp("emb")
    yield path
    embedded.stop_redis(path)
    embedded.stop_postgres(path)


def test_demo_and_doctor_on_embedded_engines(empty_data_dir, session_dns) -> None:
    env = {"SWIFTMAIL_DATA_DIR": str(empty_data_dir), "SWIFTMAIL_DNS_NAMESERVERS": "127.0.0.1",
           "SWIFTMAIL_DNS_PORT": str(session_dns.port)}
    first = run_swiftmail("demo", "--recipients", "20", env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "database: embedded PostgreSQL" in first.stdout
    assert "queue: embedded Redis" in first.stdout
    assert "migrations applied: 0001_schema, 0002_isolation" in first.stdout
    assert re.search(r"20 of 20 messages delivered to the local sink 127\.0\.0\.1:\d+", first.stdout)
    assert re.search(r"shown once:\n  sm_live_\w+", first.stdout)
    assert (empty_data_dir / "swiftmail.toml").stat().st_mode & 0o077 == 0
    # Regression: a JSON log line per message buried the summary.
    assert '"event": "message_delivered"' not in first.stdout

    again = run_swiftmail("demo", "--recipients", "20", env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "migrations applied: none (up to date)" in again.stdout
    assert "20 of 20 messages delivered" in again.stdout

    doctor = run_swiftmail("doctor", env=env, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Redis answers (embedded)" in doctor.stdout
    assert "role swiftmail_app has no BYPASSRLS" in doctor.stdout

    stopped = run_swiftmail("embedded", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not (empty_data_dir / "postgres" / "postmaster.pid").exists()
