"""Run the real `swiftmail` entry point in a subprocess, as an admin would."""

from __future__ import annotations

import os
import subprocess
import sys


def run_swiftmail(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``swiftmail ARGS`` with ``env`` layered over a clean environment."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SWIFTMAIL_") and k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "swiftmail_core.cli", *args],
        env={**base, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
