"""`swiftmail demo`: the main job on the embedded default, end to end."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import click

from swiftmail_core import apikeys, tenants
from swiftmail_core.cli.state import CliState
from swiftmail_core.install import initialise
from swiftmail_core.logs import configure_logging

DEMO_SLUG = "demo"
DEMO_KEY_NAME = "demo"


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
    if settings.log_level == "info":
        # The demo prints its own summary; a log line per message would bury it.
        configure_logging("warning", settings.log_format)
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
    replaced = _revoke_demo_keys(tenant.id)
    key = apikeys.create_api_key(tenant.id, role="owner", name=DEMO_KEY_NAME)
    click.echo(f"tenant {tenant.slug} ({tenant.id}); an owner API key, shown once"
               + (" (the previous demo key is revoked)" if replaced else "") + ":")
    click.echo(f"  {key.key}")
    command = invoked_command()
    click.echo(f"next: `{command} up` (API, worker, tracking and relay; outgoing mail is caught "
               "locally), then `curl -H 'Authorization: Bearer <key>' "
               "http://127.0.0.1:8000/v1/campaigns`")


def _revoke_demo_keys(tenant_id: uuid.UUID | str) -> int:
    """Revoke the keys earlier demo runs minted, so one demo key is live at a time."""
    earlier = [k for k in apikeys.list_api_keys(tenant_id)
               if k.name == DEMO_KEY_NAME and k.revoked_at is None]
    for key in earlier:
        apikeys.revoke_api_key(tenant_id, key.id)
    return len(earlier)


def invoked_command() -> str:
    """Return how the user can run ``swiftmail`` again: the bare name only if it is on PATH."""
    running = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if running is None or running.name != "swiftmail":
        return "swiftmail"
    found = shutil.which("swiftmail")
    if found and Path(found).resolve() == running.resolve():
        return "swiftmail"
    return os.path.relpath(running)


COMMANDS = (demo,)
