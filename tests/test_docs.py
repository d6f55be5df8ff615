"""Docs that tests keep honest: hooks, CLI reference, settings."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from swiftmail_core import hookspecs
from swiftmail_core.cli.reference import render_reference, render_settings_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _hooks() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("swiftmail_")]


def test_every_hook_has_a_heading_with_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text()
    headings = set(re.findall(r"^### (swiftmail_\w+)$", text, re.MULTILINE))
    missing = [hook for hook in _hooks() if hook not in headings]
    assert not missing, f"docs/plugins.md lacks a heading for {missing}"
    for hook in _hooks():
        assert f"def {hook}(" in text, f"docs/plugins.md lacks the signature of {hook}"
    stale = headings - set(_hooks())
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {stale}"


def test_every_hookspec_is_documented_in_code() -> None:
    for hook in _hooks():
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        assert ":returns:" in doc and "firstresult" in doc, hook


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == render_reference(), "run `make docs`"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == render_settings_reference(), "run `make docs`"


def test_every_command_help_has_an_example() -> None:
    sections = render_reference().split("\n#")[1:]
    for section in sections:
        title = section.splitlines()[0]
        assert "Example" in section, f"{title.strip()} --help has no example"


def test_every_shipped_fixture_is_documented_for_plugin_authors() -> None:
    import importlib

    from _pytest.fixtures import FixtureFunctionDefinition

    import swiftmail_core.testing

    text = (DOCS / "plugins.md").read_text()
    testing = text[text.index("## Testing your plugin"):text.index("## Hooks")]
    for module_name in swiftmail_core.testing.pytest_plugins:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if isinstance(value, FixtureFunctionDefinition):
                assert f"`{name}`" in testing, f"docs/plugins.md lacks fixture {name}"
