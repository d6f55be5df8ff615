"""A third-party plugin, installed with pip and found through its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import run_swiftmail

EXAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "swiftmail-example-plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def test_example_plugin_loads_through_its_entry_point(installed_example: Path) -> None:
    env = {"PYTHONPATH": str(installed_example)}
    listed = run_swiftmail("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("example "))
    assert "1.0.0" in line
    for hook in ("swiftmail_register_commands", "swiftmail_register_transports",
                 "swiftmail_tracking_event"):
        assert hook in line
    greeted = run_swiftmail("example-hello", "--name", "Ada", env=env)
    assert greeted.returncode == 0, greeted.stderr
    assert greeted.stdout.strip() == "hello, Ada"
    hidden = run_swiftmail("plugins", env={**env, "SWIFTMAIL_DISABLED_PLUGINS": "example"})
    assert "example " not in hidden.stdout


def test_example_plugin_declares_the_host_versions_it_targets(installed_example: Path) -> None:
    import importlib.metadata

    from packaging.requirements import Requirement

    from swiftmail_core import __version__
    from swiftmail_core.plugins import check_host_requirement

    dist = next(importlib.metadata.distributions(path=[str(installed_example)]))
    wanted = [Requirement(line) for line in dist.requires or ()]
    assert [str(r.specifier) for r in wanted if r.name == "swiftmail"] == ["<0.2,>=0.1"]
    assert __version__ in wanted[0].specifier
    check_host_requirement("example", dist.metadata)  # this host is one it targets


def test_example_transport_is_usable(installed_example: Path, monkeypatch) -> None:
    import uuid

    from swiftmail_core.plugins import PluginManager
    from swiftmail_core.settings import load_settings
    from swiftmail_core.transports import OutboundMessage, Outcome

    monkeypatch.syspath_prepend(str(installed_example))
    manager = PluginManager.load(load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "example"}))
    transport = manager.transport("example-memory")
    message = OutboundMessage(7, uuid.uuid4(), "b@x.test", "r@y.test", b"raw", "<m@x>")
    assert transport.send([message])[0].outcome is Outcome.ACCEPTED


def test_example_plugin_tests_pass_on_the_shipped_fixtures(installed_example: Path) -> None:
    # The plugin's own suite loads swiftmail_core.testing with one line of conftest.py
    # and runs on real PostgreSQL and Redis, in a process of its own.
    import os

    env = {key: value for key, value in os.environ.items()
           if (not key.startswith("SWIFTMAIL_") or key.startswith("SWIFTMAIL_TEST_"))
           and key not in ("DATABASE_URL", "REDIS_URL", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(installed_example)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=EXAMPLE, env=env,
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout, result.stdout[-2000:]
