"""`swiftmail embedded ...`: the embedded PostgreSQL and Redis in the data dir."""

from __future__ import annotations

import click

from swiftmail_core import embedded
from swiftmail_core.cli.state import CliState


@click.group("embedded", epilog="Example:\n\n\b\n  swiftmail embedded stop")
def embedded_group() -> None:
    """Manage the embedded engines used when DATABASE_URL / REDIS_URL are unset."""


@embedded_group.command("stop")
@click.pass_obj
def embedded_stop(state: CliState) -> None:
    """Stop the embedded PostgreSQL and Redis of the data directory.

    Their data stays; the next command that needs them starts them again.

    \b
    Example:
      SWIFTMAIL_DATA_DIR=/srv/swiftmail swiftmail embedded stop
    """
    data_dir = state.settings.data_dir
    embedded.stop_redis(data_dir)
    embedded.stop_postgres(data_dir)
    click.echo(f"stopped the embedded engines in {data_dir}")


COMMANDS = (embedded_group,)
