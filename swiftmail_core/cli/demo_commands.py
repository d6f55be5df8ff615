"""`swiftmail demo`: the main job on the embedded default, end to end."""

from __future__ import annotations

import click

from swiftmail_core import apikeys, tenants
from swiftmail_core.cli.state import CliState
from swiftmail_core.install import initialise

DEMO_SLUG = "demo"


@click.command()
@click.option("--recipients", default=200, show_default=True, envvar="SWIFTMAIL_DEMO_RECIPIENTS",
              type=click.IntRange(1, 100_000), help="How many sample subscribers to mail.")
@click.pass_obj
def demo(state: CliState, recipients: int) -> None:
    """Set up SwiftMail and send a personalised campaign to a local sink.

    Initialises and migrates (embedded PostgreSQL and Redis unless
    DATABASE_URL / REDIS_URL are set), imports a sample list into a demo
    tenant, sends it a personalised, tracked, DKIM-signed campaign through
    the sending pipeline to an SMTP sink on 127.0.0.1 standing in for the
    internet, and prints what was delivered. Nothing leaves this machine.
    Safe to run again: each run sends a new campaign.

    \b
    Examples:
      swiftmail demo
      swiftmail demo --recipients 2000
    """
    from swiftmail_core.sending.demo import run_demo_campaign

    report = initialise(state.config, state.overrides)
    settings = state.reload()
    runtime = state.runtime()
    engine = "embedded PostgreSQL" if settings.uses_embedded_postgres else "DATABASE_URL"
    redis = "embedded Redis" if settings.uses_embedded_redis else "REDIS_URL"
    click.echo(f"database: {engine} ({runtime.targets.database}); queue: {redis}; "
               f"settings: {report.config_file}")
    click.echo(f"migrations applied: {', '.join(report.migrations) or 'none (up to date)'}")

    with click.progressbar(length=recipients, label="sending", show_pos=True) as bar:

        def progress(delivered: int, total: int) -> None:
            bar.length = total or recipients
            bar.update(delivered - bar.pos)

        sent = run_demo_campaign(runtime, recipients=recipients, tenant_slug=DEMO_SLUG,
                                 progress=progress)
    click.echo(f"campaign {sent.campaign_id}: {sent.delivered} of {sent.recipients} messages "
               f"delivered to the local sink {sent.sink} in {sent.seconds:.1f}s")
    click.echo("ledger: " + ", ".join(f"{status} {count}" for status, count
                                      in sorted(sent.ledger.items())))
    for label in ("transport", "dkim_signed"):
        if hasattr(sent, label):
            click.echo(f"{label.replace('_', ' ')}: {getattr(sent, label)}")
    click.echo(f"first subject: {sent.sample_subject}")
    tenant = tenants.get_tenant(DEMO_SLUG)
    key = apikeys.create_api_key(tenant.id, role="owner", name="demo")
    click.echo(f"tenant {tenant.slug} ({tenant.id}); an owner API key, shown once:")
    click.echo(f"  {key.key}")
    click.echo("next: `swiftmail serve`, then "
               "`curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/v1/campaigns`")


COMMANDS = (demo,)
