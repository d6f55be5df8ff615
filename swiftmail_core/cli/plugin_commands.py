"""`swiftmail plugins`: what is installed and which hooks each implements."""

from __future__ import annotations

import json

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.plugins import PluginManager


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def plugins(state: CliState, as_json: bool) -> None:
    """List loaded plugins: name, version and hooks.

    SWIFTMAIL_LOAD_PLUGINS and SWIFTMAIL_DISABLED_PLUGINS filter what loads.

    \b
    Examples:
      swiftmail plugins
      SWIFTMAIL_DISABLED_PLUGINS=log_tracking swiftmail plugins --json
    """
    infos = PluginManager.load(state.settings).plugin_info()
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2, default=list))
        return
    for info in infos:
        click.echo(f"{info.name} {info.version}".rstrip() + f": {', '.join(info.hooks)}")


COMMANDS = (plugins,)
