"""Run by ``test_sigterm_cleanup.py`` (not collected on its own): waits in a network."""

from __future__ import annotations

import sys
import time

from tests.cluster import netns


def test_waits_inside_a_namespace(network: netns.Network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    network.add_host("waiter")
    network.spawn("waiter", [sys.executable, "-c", "import time; time.sleep(600)"],
                  tmp_path / "waiter.log")
    print(f"READY {network.prefix}", flush=True)
    time.sleep(600)
