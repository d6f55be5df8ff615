"""`swiftmail user ...`: people who sign in, with argon2 password hashes."""

from __future__ import annotations

import click

from swiftmail_core import tenants, users
from swiftmail_core.cli.state import CliState
from swiftmail_core.principal import ROLES


@click.group(epilog="Example:\n\n\b\n  swiftmail user create ada@example.com --tenant acme --role owner")
def user() -> None:
    """Manage users and their roles in tenants."""


@user.command("create")
@click.argument("email")
@click.option("--tenant", "tenant_ref", help="Tenant (slug or id) to add the user to.")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--name", default="", help="Display name.")
@click.option(
    "--password", envvar="SWIFTMAIL_USER_PASSWORD", prompt=True, hide_input=True,
    confirmation_prompt=True, help="Password (prompted when not given).",
)
@click.pass_obj
def user_create(
    state: CliState, email: str, tenant_ref: str | None, role: str, name: str, password: str
) -> None:
    """Create a user with EMAIL, optionally as a member of a tenant.

    \b
    Examples:
      swiftmail user create ada@example.com --tenant acme --role owner
      SWIFTMAIL_USER_PASSWORD=... swiftmail user create bob@example.com
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref) if tenant_ref else None
    created = users.create_user(email, password, name=name, tenant=tenant, role=role)
    suffix = f" as {role} of {tenant.slug}" if tenant else ""
    click.echo(f"created user {created.email} ({created.id}){suffix}")


@user.command("list")
@click.option("--tenant", "tenant_ref", help="Only members of this tenant (slug or id).")
@click.pass_obj
def user_list(state: CliState, tenant_ref: str | None) -> None:
    """List users (with their role when --tenant is given).

    \b
    Example:
      swiftmail user list --tenant acme
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref) if tenant_ref else None
    for row, role in users.list_users(tenant):
        click.echo("\t".join(part for part in (row.email, str(row.id), role or "") if part))


@user.command("grant")
@click.argument("email")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant (slug or id).")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.pass_obj
def user_grant(state: CliState, email: str, tenant_ref: str, role: str) -> None:
    """Give user EMAIL a ROLE in a tenant: adds them, or changes their role.

    \b
    Examples:
      swiftmail user grant ada@example.com --tenant beta --role editor
      swiftmail user grant ada@example.com --tenant acme --role admin
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref)
    added = users.set_membership(email, tenant, role)
    click.echo(f"{email} added to {tenant.slug} as {role}" if added
               else f"{email} is now {role} of {tenant.slug}")


@user.command("revoke")
@click.argument("email")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant (slug or id).")
@click.pass_obj
def user_revoke(state: CliState, email: str, tenant_ref: str) -> None:
    """Take user EMAIL out of a tenant (other memberships stay).

    \b
    Example:
      swiftmail user revoke bob@example.com --tenant acme
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref)
    users.remove_membership(email, tenant)
    click.echo(f"{email} removed from {tenant.slug}")


@user.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def user_delete(state: CliState, email: str, yes: bool) -> None:
    """Delete user EMAIL and all their memberships.

    \b
    Example:
      swiftmail user delete bob@example.com --yes
    """
    if not yes:
        click.confirm(f"delete user {email} and all their memberships?", abort=True)
    state.runtime()
    users.delete_user(email)
    click.echo(f"deleted user {email}")


COMMANDS = (user,)
