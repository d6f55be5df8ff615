"""The ``swiftmail`` admin CLI: a click group that plugins can extend.

Errors are one readable line on stderr: exit 1 for errors, 2 for usage.
Set SWIFTMAIL_DEBUG=1 to see a traceback for an unexpected failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from swiftmail_core import __version__
from swiftmail_core.cli.state import CliState
from swiftmail_core.errors import SwiftMailError


class SwiftMailGroup(click.Group):
    """The root group: adds plugins' commands, then runs with one-line errors.

    Loading plugins happens in ``main`` so that the console script and
    click's test runner take the same path: a plugin that cannot load stops
    every command with one line naming it (it used to hide its commands).
    """

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None,
        **extra: Any,
    ) -> NoReturn:
        """Run the CLI; print errors as one line and exit 1 (2 for usage)."""
        extra.pop("standalone_mode", None)
        try:
            register_plugin_commands(self)
            super().main(args=args, prog_name=prog_name or "swiftmail", standalone_mode=False,
                         **extra)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except click.exceptions.Exit as ex:
            sys.exit(ex.exit_code)
        except click.ClickException as ex:
            ex.show()
            sys.exit(ex.exit_code)
        except SwiftMailError as ex:
            click.echo(f"error: {ex.detail}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as ex:
            if os.environ.get("SWIFTMAIL_DEBUG"):
                raise
            # NOTE: first line only: a database error's next lines quote the SQL.
            summary = next(iter(str(ex).splitlines()), "")
            click.echo(
                f"error: unexpected {type(ex).__name__}: {summary} "
                "(set SWIFTMAIL_DEBUG=1 for a traceback)",
                err=True,
            )
            sys.exit(1)
        sys.exit(0)


@click.group(
    cls=SwiftMailGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Examples:\n\n\b\n  swiftmail init --yes\n  swiftmail tenant create acme\n"
    "  swiftmail apikey create --tenant acme --role admin\n  swiftmail doctor",
)
@click.version_option(__version__, "--version", prog_name="swiftmail")
@click.option(
    "--config", "config", envvar="SWIFTMAIL_CONFIG", type=click.Path(dir_okay=False),
    help="Settings file (default: DATA_DIR/swiftmail.toml).",
)
@click.option(
    "--data-dir", envvar="SWIFTMAIL_DATA_DIR", type=click.Path(file_okay=False),
    help="Data directory for embedded engines, spool and storage.",
)
@click.option("--database-url", envvar="DATABASE_URL", help="PostgreSQL URL (default: embedded).")
@click.option("--redis-url", envvar="REDIS_URL", help="Redis URL (default: embedded).")
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    data_dir: str | None,
    database_url: str | None,
    redis_url: str | None,
) -> None:
    """SwiftMail: self-hosted, multi-tenant email marketing with its own MTA.

    With nothing configured, SwiftMail runs on an embedded PostgreSQL and
    Redis kept in the data directory. Set DATABASE_URL and REDIS_URL to use
    your own servers.
    """
    from swiftmail_core.local.supervisor import die_with_supervisor

    die_with_supervisor()
    overrides = {"data_dir": data_dir, "database_url": database_url, "redis_url": redis_url}
    ctx.obj = CliState(config=config, overrides=overrides)
    ctx.call_on_close(ctx.obj.close)


def _register_builtin_commands() -> None:
    from swiftmail_core.cli import (
        apikey_commands,
        citus_commands,
        demo_commands,
        doctor_commands,
        embedded_commands,
        plugin_commands,
        setup_commands,
        tenant_commands,
        up_commands,
        user_commands,
    )

    for module in (
        setup_commands, doctor_commands, tenant_commands, user_commands, apikey_commands,
        plugin_commands, demo_commands, embedded_commands, up_commands, citus_commands,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


def register_plugin_commands(group: click.Group) -> None:
    """Let plugins add commands to ``group``; raise ``PluginError`` if one cannot load.

    Settings that cannot be read leave plugins out (so ``--help`` and ``init``
    work); the command that needs settings then reports the problem.
    """
    from swiftmail_core.errors import ConfigurationError
    from swiftmail_core.plugins import PluginManager
    from swiftmail_core.settings import load_settings

    try:
        settings = load_settings()
    except ConfigurationError:
        return
    PluginManager.load(settings).register_commands(group)


_register_builtin_commands()


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the ``swiftmail`` console script."""
    cli.main(args=argv, prog_name="swiftmail")
