"""`swiftmail citus`: where a tenant's rows live on a Citus cluster, and moving them."""

from __future__ import annotations

import click

from swiftmail_core.cli.state import CliState


def _tenant_id(state: CliState, tenant: str) -> str:
    from swiftmail_core.tenants import get_tenant

    state.runtime()
    return str(get_tenant(tenant).id)


@click.group()
def citus() -> None:
    """Place tenants on a Citus cluster (see docs/scaling.md).

    \b
    Examples:
      swiftmail citus where acme
      swiftmail citus isolate-tenant acme
      swiftmail citus move-tenant acme --to worker3.internal:5432
    """


@citus.command("where")
@click.argument("tenant")
@click.pass_obj
def where(state: CliState, tenant: str) -> None:
    """Print the shard and the worker holding TENANT's rows (a slug or id).

    \b
    Example:
      swiftmail citus where acme
    """
    from swiftmail_core.db.citus import tenant_placement

    placement = tenant_placement(state.runtime().targets, _tenant_id(state, tenant))
    click.echo(f"{tenant}: shard {placement.shard_id} on {placement.node}")


@citus.command("isolate-tenant")
@click.argument("tenant")
@click.pass_obj
def isolate_tenant(state: CliState, tenant: str) -> None:
    """Give TENANT shards of its own in every tenant table (writes wait meanwhile).

    \b
    Example:
      swiftmail citus isolate-tenant acme
    """
    from swiftmail_core.db.citus import isolate_tenant as isolate

    placement = isolate(state.runtime().targets, _tenant_id(state, tenant))
    click.echo(f"{tenant}: alone in shard {placement.shard_id} on {placement.node}")


@citus.command("move-tenant")
@click.argument("tenant")
@click.option("--to", "to_node", required=True, metavar="HOST:PORT",
              help="The worker to move the tenant's shards to.")
@click.pass_obj
def move_tenant(state: CliState, tenant: str, to_node: str) -> None:
    """Move TENANT's shards (and any tenant sharing them) to the worker --to.

    Run isolate-tenant first to move one tenant alone. Sending goes on:
    writes to the moving shards wait until the copy is done.

    \b
    Example:
      swiftmail citus move-tenant acme --to worker3.internal:5432
    """
    from swiftmail_core.db.citus import move_tenant as move

    placement = move(state.runtime().targets, _tenant_id(state, tenant), to_node)
    click.echo(f"{tenant}: shard {placement.shard_id} on {placement.node}")


COMMANDS = (citus,)
