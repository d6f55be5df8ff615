"""`swiftmail serve`: gunicorn workers answer health, readiness, metrics and the API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from swiftmail_core.apikeys import create_api_key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as ex:
        return ex.code, ex.read()


@pytest.fixture
def server(test_environ, targets, tmp_path, run_id):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {**os.environ, **test_environ, "SWIFTMAIL_DATA_DIR": str(tmp_path),
           "SWIFTMAIL_PLUGIN_WEB_REDIS_PREFIX": f"swiftmail-test-{run_id}-serve:"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "swiftmail_core.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if _get(base + "/healthz")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode()[-3000:])
        time.sleep(0.1)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_serve_answers(server, tenant_a) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(_get(server + "/readyz")[1])["status"] == "ready"
    key = create_api_key(tenant_a.id, role="viewer").key
    for _ in range(6):  # spread over both workers
        status, body = _get(server + "/v1/contacts", {"Authorization": f"Bearer {key}"})
        assert status == 200, body
    status, body = _get(server + "/metrics")
    assert status == 200
    text = body.decode()
    # Multiprocess mode: the counter aggregates every worker's requests.
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("swiftmail_http_requests_total{")
                and 'route="/v1/contacts"' in line)
    assert total == 6
    # The cluster-wide gauges ride along once, after the workers' aggregated metrics.
    assert text.count("\nswiftmail_outbox_oldest_due_age_seconds ") == 1
    assert "\nswiftmail_db_standbys " in text
