"""Commands that set an install up: init, migrate, config show."""

from __future__ import annotations

import json
import sys

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.db.migrate import migrate as run_migrations
from swiftmail_core.install import initialise


@click.command(
    epilog="Examples:\n\n\b\n  swiftmail init --yes\n"
    "  DATABASE_URL=postgresql://db.internal/swiftmail swiftmail init --yes \\\n"
    "      --admin-url postgresql://postgres@db.internal/postgres"
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--admin-url", envvar="SWIFTMAIL_DATABASE_ADMIN_URL",
    help="Superuser URL used to create roles and the database (default: DATABASE_URL).",
)
@click.option("--citus", is_flag=True, default=None,
              help="DATABASE_URL is a Citus coordinator: prepare the workers and distribute "
              "every tenant table by tenant_id (saved as the `citus` setting).")
@click.option("--citus-workers", envvar="SWIFTMAIL_CITUS_WORKERS",
              help="Comma-separated HOST:PORT of the workers to register (with --citus).")
@click.pass_obj
def init(state: CliState, yes: bool, admin_url: str | None, citus: bool | None,
         citus_workers: str | None) -> None:
    """Write settings, create database roles and the database, and migrate.

    Safe to run again: existing settings and secrets are kept, and only what
    is missing is created.
    """
    settings = state.settings
    where = "the embedded PostgreSQL" if settings.uses_embedded_postgres else "DATABASE_URL"
    if not yes and sys.stdin.isatty():
        click.confirm(
            f"Write settings to {settings.config_file} and set up the database on {where}?",
            abort=True,
        )
    overrides = dict(state.overrides)
    if admin_url:
        overrides["database_admin_url"] = admin_url
    if citus:
        overrides["citus"] = True
    if citus_workers:
        overrides["citus_workers"] = citus_workers
    report = initialise(state.config, overrides)
    state.reload()
    click.echo(f"settings: {report.config_file}")
    for key in report.written_keys:
        click.echo(f"  wrote {key}")
    for action in report.database_actions:
        click.echo(f"  {action}")
    click.echo(f"migrations applied: {', '.join(report.migrations) or 'none (up to date)'}")
    click.echo("ready: next, `swiftmail tenant create NAME`")


@click.command()
@click.pass_obj
def migrate(state: CliState) -> None:
    """Apply pending database migrations as the owner role.

    Running it twice changes nothing the second time.

    \b
    Example:
      swiftmail migrate
    """
    targets = state.runtime().targets
    applied = run_migrations(targets, report=lambda action: click.echo(f"  {action}"))
    click.echo(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    if state.settings.citus:
        from swiftmail_core.db.citus import distribute_new_tables

        for action in distribute_new_tables(targets):
            click.echo(f"  {action}")


@click.group(epilog="Example:\n\n\b\n  swiftmail config show --json")
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like lines.")
@click.pass_obj
def config_show(state: CliState, as_json: bool) -> None:
    """Print the effective settings with secrets redacted.

    Plugin tables are shown as plugins see them: the TOML ``[plugins.NAME]``
    table overlaid by ``SWIFTMAIL_PLUGIN_NAME_KEY`` environment variables.
    Hidden: core secrets, plugin settings each plugin declares secret
    (swiftmail_secret_settings) and any named like a key, secret, password,
    token or credential; URLs keep all but their password.

    \b
    Examples:
      swiftmail config show
      SWIFTMAIL_LOG_LEVEL=debug swiftmail config show --json
    """
    from swiftmail_core.plugins import PluginManager

    settings = state.settings
    shown = settings.redacted(PluginManager.load(settings).secret_settings())
    if as_json:
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    for key, value in shown.items():
        click.echo(f"{key} = {json.dumps(value)}")


COMMANDS = (init, migrate, config)
