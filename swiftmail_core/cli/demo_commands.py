"""`swiftmail demo`: set up on the embedded default and show what was made."""

from __future__ import annotations

import click

from swiftmail_core import apikeys, tenants
from swiftmail_core.cli.state import CliState
from swiftmail_core.errors import NotFoundError
from swiftmail_core.install import initialise

DEMO_SLUG = "demo"


@click.command()
@click.pass_obj
def demo(state: CliState) -> None:
    """Initialise, migrate and create a demo tenant with an API key.

    Uses the embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL
    are set. Safe to run again.

    \b
    Example:
      swiftmail demo
    """
    report = initialise(state.config, state.overrides)
    state.reload()
    runtime = state.runtime()
    engine = "embedded PostgreSQL" if report.settings.uses_embedded_postgres else "DATABASE_URL"
    click.echo(f"database: {engine} ({runtime.targets.database}), settings: {report.config_file}")
    click.echo(f"migrations applied: {', '.join(report.migrations) or 'none (up to date)'}")
    click.echo(f"redis: {'embedded' if report.settings.uses_embedded_redis else 'REDIS_URL'} "
               f"(ping: {runtime.redis.ping()})")
    try:
        tenant = tenants.get_tenant(DEMO_SLUG)
        click.echo(f"tenant: {tenant.slug} ({tenant.id}) already exists")
    except NotFoundError:
        tenant = tenants.create_tenant(DEMO_SLUG, "Demo Tenant")
        click.echo(f"tenant: created {tenant.slug} ({tenant.id})")
    key = apikeys.create_api_key(tenant.id, role="owner", name="demo")
    principal = apikeys.authenticate_key(key.key)
    click.echo(f"api key (owner, shown once): {key.key}")
    click.echo(f"the key authenticates as tenant {principal.tenant_id}, role {principal.role}")
    click.echo("plugins: " + ", ".join(info.name for info in runtime.plugins.plugin_info()))
    click.echo("next: `swiftmail doctor`; sending a campaign arrives with the sending pipeline")


COMMANDS = (demo,)
