"""Built-in CLI commands of the sending pipeline: `swiftmail worker`, `swiftmail send ...`."""

from __future__ import annotations

import datetime
import json
import signal
from typing import Any

import click
import structlog

from swiftmail_core.cli.params import UUID_TEXT
from swiftmail_core.cli.state import CliState
from swiftmail_core.hookspecs import hookimpl


@click.command()
@click.option("--threads", type=int, envvar="SWIFTMAIL_WORKER_THREADS",
              help="Worker threads in this process (default: the worker_threads setting).")
@click.pass_obj
def worker(state: CliState, threads: int | None) -> None:
    """Run the sending worker (the huey consumer) until interrupted.

    Starts due campaigns, claims and sends ledger rows, retries deferred
    ones, reclaims expired leases. Run one per core. Stop it with SIGINT
    (Ctrl-C) for a graceful shutdown: running batches finish. SIGTERM
    interrupts them; their leases expire and other workers resend. Refuses
    to start when a transport would strand mail (the relay hand-off with no
    relay delivering its spool on this host).

    \b
    Examples:
      swiftmail worker
      swiftmail worker --threads 4
      kill -INT <pid>        # graceful stop
    """
    from swiftmail_core.runtime import ProcessKind
    from swiftmail_core.sending.worker import build_queue
    from swiftmail_core.startup_gc import freeze_startup_objects
    from swiftmail_core.transports import preflight

    runtime = state.runtime(ProcessKind.WORKER)
    # A configuration that would strand mail (e.g. a hand-off with no local relay) stops here.
    preflight(runtime.plugins.transports().values())
    queue = build_queue(runtime)
    consumer = queue.consumer(threads)
    freeze_startup_objects()
    # NOTE: huey installs its own SIGINT (graceful) and SIGTERM handlers in run().
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    structlog.get_logger("swiftmail.worker").info(
        "worker_started", threads=consumer.workers, tick_seconds=state.settings.worker_tick_seconds)
    run_until_stopped(consumer, runtime.plugins)


def run_until_stopped(consumer: Any, plugins: Any) -> None:
    """Run the huey consumer; on the way out, close every transport's connections."""
    try:
        consumer.run()
    finally:
        plugins.close_transports()


@click.group(epilog="Example:\n\n\b\n  swiftmail send schedule acme 6f1c... --at now")
def send() -> None:
    """Operate campaigns and the outbox (schedule, pause, resume, cancel, tick)."""


def _tenant_id(tenant_ref: str) -> str:
    from swiftmail_core import tenants

    return str(tenants.get_tenant(tenant_ref).id)


@send.command("schedule")
@click.argument("tenant_ref", metavar="TENANT")
@click.argument("campaign_id", type=UUID_TEXT)
@click.option("--at", "when", default="now", show_default=True, envvar="SWIFTMAIL_SEND_AT",
              help="ISO 8601 time with zone, or 'now'.")
@click.pass_obj
def send_schedule(state: CliState, tenant_ref: str, campaign_id: str, when: str) -> None:
    """Schedule CAMPAIGN_ID of TENANT (slug or id) to start at --at.

    \b
    Examples:
      swiftmail send schedule acme 6f1c2d3e-... --at now
      swiftmail send schedule acme 6f1c2d3e-... --at 2030-01-01T09:00:00+00:00
    """
    from swiftmail_core.errors import ValidationError
    from swiftmail_core.sending import lifecycle

    state.runtime()
    at = None
    if when != "now":
        try:
            at = datetime.datetime.fromisoformat(when)
        except ValueError as ex:
            raise ValidationError.for_field("--at", "use ISO 8601, e.g. 2030-01-01T09:00Z") from ex
    row = lifecycle.schedule_campaign(_tenant_id(tenant_ref), campaign_id, at)
    click.echo(f"campaign {row['id']} {row['status']} for {row['scheduled_at']}")


def _simple(name: str, verb: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("tenant_ref", metavar="TENANT")
    @click.argument("campaign_id", type=UUID_TEXT)
    @click.pass_obj
    def command(state: CliState, tenant_ref: str, campaign_id: str) -> None:
        from swiftmail_core.sending import lifecycle

        state.runtime()
        row = getattr(lifecycle, verb)(_tenant_id(tenant_ref), campaign_id)
        click.echo(f"campaign {row['id']} {row['status']}")

    return command


for _name, _verb, _help in (
    ("pause", "pause_campaign",
     "Pause CAMPAIGN_ID of TENANT; messages in flight finish.\n\n\b\nExample:\n"
     "  swiftmail send pause acme 6f1c2d3e-..."),
    ("resume", "resume_campaign",
     "Resume a paused campaign where it stopped.\n\n\b\nExample:\n"
     "  swiftmail send resume acme 6f1c2d3e-..."),
    ("cancel", "cancel_campaign",
     "Cancel a campaign: nothing more is sent.\n\n\b\nExample:\n"
     "  swiftmail send cancel acme 6f1c2d3e-..."),
):
    send.add_command(_simple(_name, _verb, _help))


@send.command("status")
@click.argument("tenant_ref", metavar="TENANT")
@click.argument("campaign_id", type=UUID_TEXT)
@click.pass_obj
def send_status(state: CliState, tenant_ref: str, campaign_id: str) -> None:
    """Print a campaign's status and its ledger counts as JSON.

    \b
    Example:
      swiftmail send status acme 6f1c2d3e-...
    """
    from swiftmail_core.db import tenant_tx

    state.runtime()
    with tenant_tx(_tenant_id(tenant_ref)) as database:
        campaign = database.execute_sql(
            "SELECT status, recipient_count FROM campaigns WHERE id = %s", (campaign_id,)
        ).fetchone()
        counts = dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
            (campaign_id,)).fetchall())
    if campaign is None:
        from swiftmail_core.errors import NotFoundError

        raise NotFoundError(f"no campaign {campaign_id} for tenant {tenant_ref}")
    click.echo(json.dumps({"status": campaign[0], "recipients": campaign[1], "ledger": counts}))


@send.command("tick")
@click.option("--drain", is_flag=True, help="Also send everything due, in this process.")
@click.pass_obj
def send_tick(state: CliState, drain: bool) -> None:
    """Run one round of the periodic machinery now (start, reclaim, finish).

    \b
    Examples:
      swiftmail send tick
      swiftmail send tick --drain
    """
    from swiftmail_core.sending import sweeper
    from swiftmail_core.sending.worker import SendingWorker

    runtime = state.runtime()
    done = sweeper.tick(runtime.settings, runtime.plugins)
    if drain:
        done["claimed"] = SendingWorker(runtime.settings, runtime.plugins).drain(3600)
    click.echo(json.dumps(done))


@hookimpl
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add `swiftmail worker` and `swiftmail send`."""
    cli.add_command(worker)
    cli.add_command(send)
