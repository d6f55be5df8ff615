"""A plugin that cannot load stops the CLI with one line naming it (exit 1)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftmail_core import __version__
from swiftmail_core.cli import cli
from tests.cli_helpers import run_swiftmail
from tests.plugins.installed import install_plugin

IMPORT_FAILS = "import swiftmail_no_such_module\n"
BAD_ARGUMENT = """
    from swiftmail_core.hookspecs import hookimpl

    @hookimpl
    def swiftmail_tracking_event(event, colour):
        pass
"""
MISSPELLED = """
    from swiftmail_core.hookspecs import hookimpl

    @hookimpl
    def swiftmail_tracking_events(event):
        pass
"""
GOOD = """
    import click
    from swiftmail_core.hookspecs import hookimpl

    @click.command("hello-{name}")
    def hello():
        "Say hello (Example: swiftmail hello)."
        click.echo("hello")

    @hookimpl
    def swiftmail_register_commands(cli):
        cli.add_command(hello)
"""


def _invoke(site: Path, monkeypatch: pytest.MonkeyPatch, *args: str):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    # NOTE: the plugin's commands go on a copy and click's cached --help option (built
    # from the first context that asks) is restored: tests/test_docs.py renders both.
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    monkeypatch.setattr(cli, "_help_option", None)
    return CliRunner().invoke(cli, list(args), env={"SWIFTMAIL_LOAD_PLUGINS": None})


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: plugin "), text
    return lines[0]


def test_import_error_stops_every_command_with_one_line(tmp_path: Path) -> None:
    # Regression: the broken plugin was skipped silently and its commands vanished.
    env = install_plugin(tmp_path, "broken", IMPORT_FAILS)
    for args in (("plugins",), ("--help",)):
        result = run_swiftmail(*args, env=env)
        assert result.returncode == 1, result.stdout
        line = _one_error_line(result.stderr)
        assert "'broken' failed to import (ModuleNotFoundError:" in line
        assert "SWIFTMAIL_DISABLED_PLUGINS" in line
    escaped = run_swiftmail("plugins", env={**env, "SWIFTMAIL_DISABLED_PLUGINS": "broken"})
    assert escaped.returncode == 0, escaped.stderr


def test_bad_hookimpl_stops_the_cli_runner_naming_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, "badargs", BAD_ARGUMENT)
    result = _invoke(tmp_path, monkeypatch, "plugins")
    assert result.exit_code == 1, result.output
    line = _one_error_line(result.stderr)
    assert "plugin 'badargs' cannot register" in line and "colour" in line


def test_misspelled_hook_stops_the_cli_runner_naming_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, "typo", MISSPELLED)
    result = _invoke(tmp_path, monkeypatch, "plugins")
    assert result.exit_code == 1, result.output
    line = _one_error_line(result.stderr)
    assert "plugin 'typo' implements unknown hook 'swiftmail_tracking_events'" in line


def test_a_plugin_for_another_host_version_is_refused(tmp_path: Path) -> None:
    env = install_plugin(tmp_path, "future", GOOD.replace("{name}", "future"),
                         requires=["swiftmail>=9.0,<10", "click>=8"])
    result = run_swiftmail("hello-future", env=env)
    assert result.returncode == 1, result.stdout
    line = _one_error_line(result.stderr)
    assert f"plugin 'future' (future_plugin 1.0) requires swiftmail<10,>=9.0, but this is " \
        f"swiftmail {__version__}" in line


def test_a_plugin_for_this_host_version_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    major, minor = __version__.split(".")[:2]
    install_plugin(tmp_path, "current", GOOD.replace("{name}", "current"),
                   requires=[f"swiftmail>={major}.{minor},<{major}.{int(minor) + 1}",
                             'swiftmail<0.0.1; python_version < "3"'])
    result = _invoke(tmp_path, monkeypatch, "hello-current")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello\n"
