"""`swiftmail tenant ...`: create, list, suspend, resume, delete tenants."""

from __future__ import annotations

import click

from swiftmail_core import tenants
from swiftmail_core.cli.state import CliState


@click.group(epilog="Example:\n\n\b\n  swiftmail tenant create acme && swiftmail tenant list")
def tenant() -> None:
    """Manage tenants (each an isolated organisation)."""


@tenant.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
@click.pass_obj
def tenant_create(state: CliState, slug: str, name: str | None) -> None:
    """Create a tenant identified by SLUG.

    \b
    Example:
      swiftmail tenant create acme --name "Acme Inc."
    """
    state.runtime()
    created = tenants.create_tenant(slug, name)
    click.echo(f"created tenant {created.slug} ({created.id})")


@tenant.command("list")
@click.pass_obj
def tenant_list(state: CliState) -> None:
    """List tenants with their id and status.

    \b
    Example:
      swiftmail tenant list
    """
    state.runtime()
    for row in tenants.list_tenants():
        click.echo(f"{row.slug}\t{row.id}\t{row.status}\t{row.name}")


@tenant.command("suspend")
@click.argument("tenant_ref", metavar="TENANT")
@click.pass_obj
def tenant_suspend(state: CliState, tenant_ref: str) -> None:
    """Suspend TENANT (slug or id): its API keys stop working at once.

    \b
    Example:
      swiftmail tenant suspend acme
    """
    state.runtime()
    row = tenants.set_tenant_status(tenant_ref, "suspended")
    click.echo(f"suspended tenant {row.slug}")


@tenant.command("resume")
@click.argument("tenant_ref", metavar="TENANT")
@click.pass_obj
def tenant_resume(state: CliState, tenant_ref: str) -> None:
    """Reactivate a suspended TENANT.

    \b
    Example:
      swiftmail tenant resume acme
    """
    state.runtime()
    row = tenants.set_tenant_status(tenant_ref, "active")
    click.echo(f"resumed tenant {row.slug}")


@tenant.command("delete")
@click.argument("tenant_ref", metavar="TENANT")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def tenant_delete(state: CliState, tenant_ref: str, yes: bool) -> None:
    """Delete TENANT and every row it owns. This cannot be undone.

    \b
    Example:
      swiftmail tenant delete acme --yes
    """
    state.runtime()
    if not yes:
        click.confirm(f"Delete tenant {tenant_ref} and all its data?", abort=True)
    row = tenants.delete_tenant(tenant_ref)
    click.echo(f"deleted tenant {row.slug}")


COMMANDS = (tenant,)
