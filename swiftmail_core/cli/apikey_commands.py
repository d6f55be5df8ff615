"""`swiftmail apikey ...`: create (shown once), list and revoke API keys."""

from __future__ import annotations

import click

from swiftmail_core import apikeys, tenants
from swiftmail_core.cli.params import UUID_TEXT
from swiftmail_core.cli.state import CliState
from swiftmail_core.principal import ROLES
from swiftmail_core.timestamps import rfc3339


@click.group(epilog="Example:\n\n\b\n  swiftmail apikey create --tenant acme --role admin")
def apikey() -> None:
    """Manage tenants' API keys."""


@apikey.command("create")
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.option("--role", type=click.Choice(ROLES), default="editor", show_default=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--scope", "scopes", multiple=True,
              help="Restrict to RESOURCE:read|write|* (repeatable); default: the role's all.")
@click.pass_obj
def apikey_create(
    state: CliState, tenant_ref: str, role: str, name: str, scopes: tuple[str, ...]
) -> None:
    """Create an API key; it is printed once and never shown again.

    \b
    Examples:
      swiftmail apikey create --tenant acme --role admin --name deploy
      swiftmail apikey create --tenant acme --role viewer --scope contacts:read
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref)
    created = apikeys.create_api_key(tenant.id, role=role, name=name, scopes=scopes)
    click.echo(f"created key {created.id} ({role}) for {tenant.slug}; it will not be shown again:")
    click.echo(created.key)


@apikey.command("list")
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.pass_obj
def apikey_list(state: CliState, tenant_ref: str) -> None:
    """List a tenant's keys (never the keys themselves).

    \b
    Example:
      swiftmail apikey list --tenant acme
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref)
    for key in apikeys.list_api_keys(tenant.id):
        status = "revoked" if key.revoked_at else "active"
        used = rfc3339(key.last_used_at) if key.last_used_at else "never used"
        scopes = ",".join(key.scopes) or "*"
        click.echo(f"{key.id}\tsm_live_{key.lookup_id}_…\t{key.role}\t{scopes}\t{status}\t{used}\t{key.name}")


@apikey.command("revoke")
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.argument("key_id", type=UUID_TEXT)
@click.pass_obj
def apikey_revoke(state: CliState, tenant_ref: str, key_id: str) -> None:
    """Revoke KEY_ID at once.

    \b
    Example:
      swiftmail apikey revoke --tenant acme 7c9e6679-7425-40de-944b-e07fc1f90ae7
    """
    state.runtime()
    tenant = tenants.get_tenant(tenant_ref)
    apikeys.revoke_api_key(tenant.id, key_id)
    click.echo(f"revoked key {key_id}")


COMMANDS = (apikey,)
