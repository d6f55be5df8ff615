"""Generate docs/cli.md from the CLI's own --help (``make docs``).

A test compares the file with this output, so the reference never drifts.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

HEADER = (
    "# `swiftmail` CLI reference\n\n"
    "Generated from `--help` by `make docs` (python -m swiftmail_core.cli.reference); "
    "tests/test_docs.py fails when it is out of date.\n\n"
    "Exit codes: 0 success, 1 error (one line on stderr), 2 usage error. "
    "Global options take environment variables: `--config` (SWIFTMAIL_CONFIG), "
    "`--data-dir` (SWIFTMAIL_DATA_DIR), `--database-url` (DATABASE_URL), "
    "`--redis-url` (REDIS_URL).\n"
)


def _walk(
    command: click.Command, path: list[str]
) -> Iterator[tuple[list[str], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], [*path, name])


def render_reference() -> str:
    """Return the Markdown reference of every command, plugins' included."""
    from swiftmail_core.cli import cli, register_plugin_commands

    register_plugin_commands(cli)
    parts = [HEADER]
    for path, command in _walk(cli, ["swiftmail"]):
        with click.Context(command, info_name=" ".join(path), terminal_width=100) as ctx:
            help_text = command.get_help(ctx)
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"\n{level} `{' '.join(path)}`\n\n```text\n{help_text}\n```\n")
    return "".join(parts)


SETTINGS_HEADER = """# Configuration

SwiftMail reads one settings object. Precedence, highest first: a CLI flag, the
environment, the TOML settings file, the default. The file is
`DATA_DIR/swiftmail.toml` unless `--config` or `SWIFTMAIL_CONFIG` names another.
With neither, nor a data directory given (`--data-dir`, `SWIFTMAIL_DATA_DIR`),
`/etc/swiftmail/swiftmail.toml` is used when it exists and is visible to the
user (a system install: `sudo swiftmail tenant list` on a production host finds
the install's settings and never starts an embedded PostgreSQL); otherwise the
per-user data directory's. `swiftmail init` writes it (mode 0600) with
generated secrets.
`swiftmail config show` prints the effective values with secrets redacted.

Plugin options live in `[plugins.NAME]` tables of the file and in
`SWIFTMAIL_PLUGIN_NAME_KEY` environment variables.

Generated from `swiftmail_core/settings.py` by `make docs`; a test fails when it
is out of date.

| setting | environment | default | description |
| --- | --- | --- | --- |
"""


def render_settings_reference() -> str:
    """Return the Markdown table of every setting."""
    from swiftmail_core.settings import SETTING_FIELDS, env_names

    rows = []
    for name, field in SETTING_FIELDS.items():
        default = field.default
        shown = "(none)" if default in (None, ()) else f"`{default}`"
        if name == "data_dir":
            shown = "user data dir (`~/.local/share/swiftmail`)"
        secret = " Secret: redacted in `config show`." if field.metadata["secret"] else ""
        envs = ", ".join(f"`{env}`" for env in env_names(name))
        rows.append(f"| `{name}` | {envs} | {shown} | {field.metadata['help']}{secret} |")
    return SETTINGS_HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    import sys

    which = sys.argv[1] if len(sys.argv) > 1 else "cli"
    print(render_settings_reference() if which == "settings" else render_reference(), end="")
