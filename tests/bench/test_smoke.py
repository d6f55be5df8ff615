"""Every benchmark runs at its ``--smoke`` size in CI, so a broken one fails the suite.

Each ``bench/*.py`` must finish its smoke size with exit code 0 and print exactly
one JSON line on stdout naming itself with ``"status": "ok"``. A campaign
benchmark whose relay is killed must exit non-zero and print no rate. Nothing
here asserts a timing. Deselect with ``-m "not bench"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py") if not path.name.startswith("_"))
BOUND_SECONDS = 180  # per benchmark: a hang bound, not a speed assertion
PARALLEL = 4
KILLED_RELAY = ("--smoke", "--inject-failure", "kill-relay")
sys.path.insert(0, str(ROOT))

from bench._common import MISSING_TOOL, OK, UNFINISHED  # noqa: E402

pytestmark = pytest.mark.bench


def run_benchmark(script: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run one benchmark (a name in bench/ or a path) in its own interpreter."""
    path = script if isinstance(script, Path) else BENCH / f"{script}.py"
    env = dict(os.environ)
    if "SWIFTMAIL_TEST_ADMIN_URL" in env:
        env.setdefault("SWIFTMAIL_BENCH_ADMIN_URL", env["SWIFTMAIL_TEST_ADMIN_URL"])
    return subprocess.run([sys.executable, str(path), *extra], capture_output=True, text=True,
                          timeout=BOUND_SECONDS, env=env, cwd=ROOT, check=False)


def one_json_line(completed: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """Return the single JSON line a benchmark printed (fail on anything else)."""
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, f"expected one line on stdout, got {len(lines)}:\n" \
        f"{completed.stdout[-2000:]}\nstderr:\n{completed.stderr[-4000:]}"
    return json.loads(lines[0])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future]]:  # type: ignore[type-arg]
    """Start the selected benchmark runs, a few at a time, once (keeps the module near 60 s)."""
    names = {item.name for item in request.session.items if item.module is request.module}
    selected = sorted({item.callspec.params["script"] for item in request.session.items
                       if item.module is request.module and hasattr(item, "callspec")
                       and "script" in item.callspec.params})
    with ThreadPoolExecutor(PARALLEL) as pool:
        runs = {}
        if KILLED_RELAY_TEST in names:
            runs["killed-relay"] = pool.submit(run_benchmark, "campaign_throughput", *KILLED_RELAY)
        runs.update({script: pool.submit(run_benchmark, script, "--smoke")
                     for script in selected})
        yield runs


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_size_finishes_with_one_json_line(
        script: str, smoke_runs: dict[str, Future]) -> None:  # type: ignore[type-arg]
    completed = smoke_runs[script].result()
    line = one_json_line(completed)
    if completed.returncode == MISSING_TOOL:
        tool = re.match(r"(\S+) is not installed", str(line["error"]))
        if tool and shutil.which(tool.group(1)) is None \
                and not Path("/usr/sbin", tool.group(1)).exists():
            pytest.skip(f"{line['error']}")
    assert completed.returncode == OK, completed.stderr[-4000:]
    assert line["benchmark"] == script
    assert line["status"] == "ok"
    assert line["smoke"] is True
    assert "cpu_steal_percent" in line  # what the host took from this machine meanwhile


def test_campaign_benchmark_with_a_killed_relay_exits_non_zero_without_a_rate(
        smoke_runs: dict[str, Future]) -> None:  # type: ignore[type-arg]
    completed = smoke_runs["killed-relay"].result()
    line = one_json_line(completed)
    assert completed.returncode == UNFINISHED, completed.stderr[-4000:]
    assert line["status"] == "unfinished", (line, completed.stderr[-4000:])
    assert "relay" in str(line["error"]), line
    assert not [key for key in line if key.endswith(("_per_s", "_per_hour"))]


def test_every_benchmark_goes_through_the_shared_helper() -> None:
    for script in SCRIPTS:
        text = (BENCH / f"{script}.py").read_text()
        assert "from bench._common import" in text, script
        assert f'run("{script}", ' in text, script


KILLED_RELAY_TEST = test_campaign_benchmark_with_a_killed_relay_exits_non_zero_without_a_rate.__name__
HELPER_CASES = {
    "unfinished": ("raise Unfinished('only 3 of 5 delivered')", UNFINISHED, "unfinished"),
    "missing-tool": ("require('swiftmail-no-such-tool')", MISSING_TOOL, "missing-tool"),
    "crash": ("raise RuntimeError('boom')", UNFINISHED, "error"),
    "ok": ("print('a stray line on stdout'); return {'things_per_s': 1.0}", OK, "ok"),
}


@pytest.mark.parametrize("case", sorted(HELPER_CASES))
def test_helper_prints_one_line_and_the_exit_code(case: str, tmp_path: Path) -> None:
    body, code, status = HELPER_CASES[case]
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from bench._common import Unfinished, arguments, require, run\n"
        "def work(args):\n"
        f"    {body}\n"
        "run('probe', work, arguments('probe', smoke={}))\n")
    completed = run_benchmark(script)
    line = one_json_line(completed)
    assert completed.returncode == code
    assert line["status"] == status
    assert ("things_per_s" in line) is (status == "ok")


def test_scratch_installs_started_together_all_succeed(tmp_path: Path) -> None:
    # The roles are cluster-wide and shared by every benchmark: two `init`s at
    # once failed with "tuple concurrently updated" (CI ran smoke sizes four at a time).
    script = tmp_path / "install.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from bench._common import arguments, run, scratch_install\n"
        "def work(args):\n"
        "    with scratch_install():\n"
        "        return {}\n"
        "run('install', work, arguments('install', smoke={}))\n")
    env = dict(os.environ)
    if "SWIFTMAIL_TEST_ADMIN_URL" in env:
        env.setdefault("SWIFTMAIL_BENCH_ADMIN_URL", env["SWIFTMAIL_TEST_ADMIN_URL"])
    processes = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(4)]
    outcomes = [process.communicate(timeout=BOUND_SECONDS) for process in processes]
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == OK, (out, err[-2000:])
