"""The Citus mode of a benchmark: the same workload on a local cluster in the same run.

A benchmark that has one adds :func:`add_arguments` to its parser and, when
``--citus`` is given, measures its workload a second time on a coordinator
with two workers on this machine (``tests/citus/cluster.py``, removed at the
end) after the single-node run, through the production ``swiftmail init
--citus`` path. The figure is the ratio cluster / single node: one machine
cannot give the cluster more cores, so it is the cost of coordination.

Without the Citus extension built, ``--citus`` ends with ``MISSING_TOOL``
(exit 3) naming the build script; the main suite's smoke runs never pass
``--citus`` (``make test-citus`` runs the Citus smoke sizes,
``tests/citus/test_bench_smoke.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._common import MissingTool, environment, initialise_scratch
from tests.citus.cluster import CitusCluster, citus_installed

#: The environment variable that pins the cluster's first port (by hand runs on a shared machine).
PORT_VARIABLE = "SWIFTMAIL_BENCH_CITUS_PORT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--citus`` and ``--citus-port`` to a benchmark's parser."""
    parser.add_argument(
        "--citus", action="store_true",
        help="also run the workload on a Citus coordinator and two workers on this machine, "
             "in the same run; report both and the ratio cluster / single node")
    parser.add_argument(
        "--citus-port", type=int, default=int(os.environ.get(PORT_VARIABLE) or 0) or None,
        help=f"first of the cluster's three ports (default: free ports; ${PORT_VARIABLE})")


@contextlib.contextmanager
def local_cluster(first_port: int | None = None) -> Iterator[CitusCluster]:
    """Start a coordinator and two workers; stop and remove them at the end."""
    if not citus_installed():
        raise MissingTool("citus.so is not installed: bash ../shared/vendor/citus/build.sh "
                          "(make test-citus builds it)")
    cluster = CitusCluster(first_port=first_port)
    try:
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def install_environment(cluster: CitusCluster, workdir: Path, database: str,
                        role_prefix: str = "swiftmail_bench") -> dict[str, str]:
    """Return the environment of an install whose database ``database`` is on the coordinator."""
    port = cluster.coordinator_port
    return {
        **environment(workdir, database, role_prefix),
        "DATABASE_URL": f"postgresql://127.0.0.1:{port}/{database}",
        "SWIFTMAIL_DATABASE_ADMIN_URL": cluster.admin_url(port),
        "SWIFTMAIL_CITUS": "1",
        "SWIFTMAIL_CITUS_WORKERS": ",".join(f"127.0.0.1:{p}" for p in cluster.worker_ports),
    }


@contextlib.contextmanager
def scratch_install(cluster: CitusCluster, role_prefix: str = "swiftmail_bench",
                    ) -> Iterator[dict[str, str]]:
    """Run ``swiftmail init --citus`` for a throwaway install on ``cluster``; yield its environment.

    The environment is also put in ``os.environ`` for this process (as
    ``bench._common.scratch_install`` does). The database goes with the
    cluster; the data dir is removed at the end.
    """
    workdir = Path(tempfile.mkdtemp(prefix="swiftmail-bench-citus-"))
    env = install_environment(cluster, workdir, "swiftmail_bench", role_prefix)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        initialise_scratch()
        yield env
    finally:
        from swiftmail_core import db

        db.disconnect()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(workdir, ignore_errors=True)


def compare(single: dict[str, Any], citus: dict[str, Any], keys: dict[str, bool]) -> dict[str, Any]:
    """Return ``citus_vs_single_<key>`` for each key: >1 is the cluster doing better.

    ``keys`` maps a figure to True when higher is better (a rate) and False
    when lower is (a duration), so every ratio reads the same way.
    """
    ratios: dict[str, Any] = {}
    for key, higher_is_better in keys.items():
        mine, theirs = citus.get(key), single.get(key)
        if not mine or not theirs:
            ratios[f"citus_vs_single_{key}"] = None
        else:
            value = mine / theirs if higher_is_better else theirs / mine
            ratios[f"citus_vs_single_{key}"] = round(value, 3)
    return ratios
