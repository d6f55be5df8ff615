"""The benchmarks' Citus modes run at their smoke sizes in ``make test-citus``, so they cannot rot.

``tests/bench`` runs every benchmark's single-node smoke size in the main
suite; the ``--citus`` modes start clusters of their own (three PostgreSQL
nodes each), which belongs here. Each must finish with exit code 0 and one
JSON line that carries the cluster's figures and the ratio. Nothing here
asserts a timing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.bench.test_smoke import one_json_line

ROOT = Path(__file__).resolve().parents[2]
BOUND_SECONDS = 900  # per benchmark, two clusters' worth of set-up under load: a hang bound

#: Each benchmark's Citus mode and a ratio its line must carry.
CITUS_MODES = {
    "api_throughput": "citus_vs_single_get_rps",
    "campaign_audience": "citus_vs_single_resolve_s",
    "import_contacts": "citus_vs_single_import_s_median",
}


def run_citus_smoke(script: str) -> subprocess.CompletedProcess[str]:
    """Run one benchmark's ``--smoke --citus`` in its own interpreter."""
    env = dict(os.environ)
    if "SWIFTMAIL_TEST_ADMIN_URL" in env:
        env.setdefault("SWIFTMAIL_BENCH_ADMIN_URL", env["SWIFTMAIL_TEST_ADMIN_URL"])
    return subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--smoke",
                           "--citus"], capture_output=True, text=True, timeout=BOUND_SECONDS,
                          env=env, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def citus_smoke_runs():  # type: ignore[no-untyped-def]
    """Run the three Citus smoke sizes, at most two at a time (six PostgreSQL nodes)."""
    with ThreadPoolExecutor(2) as pool:
        yield {script: pool.submit(run_citus_smoke, script)
               for script in CITUS_MODES}


@pytest.mark.parametrize("script", sorted(CITUS_MODES))
def test_citus_smoke_size_finishes_with_the_clusters_figures(
        script: str, citus_smoke_runs) -> None:  # type: ignore[no-untyped-def]
    completed = citus_smoke_runs[script].result()
    line = one_json_line(completed)
    if script == "api_throughput" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (.ci/system-packages)")
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert line["benchmark"] == script
    assert line["status"] == "ok"
    assert isinstance(line["citus"], dict)
    assert line[CITUS_MODES[script]] is not None
