"""The relay's built-in plugin: the ``swiftmail relay`` commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from swiftmail_relay import queue_ops
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.spool import Spool

from swiftmail_core.cli.state import CliState
from swiftmail_core.errors import SwiftMailError, ValidationError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings

_SELECT = [
    click.option("--domain", envvar="SWIFTMAIL_RELAY_DOMAIN", help="Recipient domain to act on."),
    click.option("--tenant", envvar="SWIFTMAIL_RELAY_TENANT", help="Tenant id or slug to act on."),
]


def _selector_options(function):  # type: ignore[no-untyped-def]
    for option in reversed(_SELECT):
        function = option(function)
    return function


def _spool(state: CliState) -> Spool:
    return Spool(RelayConfig.from_settings(state.settings).spool_dir)


def _selector(state: CliState, domain: str | None, tenant: str | None, *,
              required: bool = True) -> queue_ops.Selector:
    if required and not domain and not tenant:
        raise ValidationError.for_field("domain", "give --domain, --tenant or both")
    tenant_id = None
    if tenant:
        from swiftmail_core.tenants import get_tenant

        state.runtime()
        tenant_id = str(get_tenant(tenant).id)
    return queue_ops.Selector(domain=domain.lower() if domain else None, tenant=tenant_id)


@click.group("relay", invoke_without_command=True, epilog=(
    "Examples:\n\n\b\n  swiftmail relay run\n  swiftmail relay queue\n"
    "  swiftmail relay hold --domain example.com\n  swiftmail relay retry --tenant acme\n"
    "  swiftmail relay reinject /mnt/relay2/spool"))
@click.pass_context
def relay_group(ctx: click.Context) -> None:
    """Run and operate SwiftMail's built-in MTA relay (alone: same as `run`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(relay_run)


@relay_group.command("run")
@click.option("--no-deliver", is_flag=True, envvar="SWIFTMAIL_RELAY_NO_DELIVER",
              help="Only listen and spool (extra listener processes sharing the port).")
@click.pass_obj
def relay_run(state: CliState, no_deliver: bool = False) -> None:
    """Deliver the spool and listen for platform hand-offs, submissions and bounces.

    Runs until stopped. Workers on any host hand mail to the platform
    intake (intake_listen, default 127.0.0.1:2526, signed with the platform
    secret). Settings live in [plugins.relay] (see docs/relay.md).

    \b
    Example:
      SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN=127.0.0.1:2525 swiftmail relay run
    \b
    Several `swiftmail relay run --no-deliver` processes can share the
    submission port (SO_REUSEPORT); exactly one process per spool delivers.
    """
    from swiftmail_relay.runner import run_relay

    from swiftmail_core.runtime import ProcessKind
    from swiftmail_core.startup_gc import freeze_startup_objects

    runtime = state.runtime(ProcessKind.RELAY)
    config = RelayConfig.from_settings(state.settings)
    freeze_startup_objects()
    asyncio.run(run_relay(runtime, config, deliver=not no_deliver))


@relay_group.command("queue")
@click.option("--json", "as_json", is_flag=True, envvar="SWIFTMAIL_RELAY_JSON",
              help="Print JSON instead of a table.")
@click.option("--detail", is_flag=True,
              help="One line per message: queue id, tenant, destination, attempts, next "
                   "attempt, what it waits for (retry, warm-up, rate, slot, ...), last reply.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="With --detail: at most this many messages, soonest next attempt first.")
@click.option("--domain", help="With --detail: only messages to this recipient domain.")
@click.pass_obj
def relay_queue(state: CliState, as_json: bool, detail: bool, limit: int,
                domain: str | None) -> None:
    """Show queue depth per destination domain and per tenant, or per message.

    \b
    Examples:
      swiftmail relay queue --json
      swiftmail relay queue --detail --domain gmail.com --limit 20
    """
    if detail:
        selector = queue_ops.Selector(domain=domain.lower()) if domain else None
        rows = queue_ops.detail(_spool(state), selector, limit=limit)
        if as_json:
            click.echo(json.dumps(rows))
            return
        _print_detail(rows)
        return
    report = queue_ops.depth(_spool(state))
    if as_json:
        click.echo(json.dumps(report))
        return
    totals = report["totals"]
    click.echo(f"messages {totals['messages']}  recipients {totals['recipients']}  "
               f"held {totals['held']}")
    for title, rows in (("destination", report["domains"]), ("tenant", report["tenants"])):
        click.echo(f"\n{title:<40} pending")
        for name, count in rows.items():
            click.echo(f"{name:<40} {count}")


def _print_detail(rows: list[dict]) -> None:  # type: ignore[type-arg]
    import datetime

    click.echo(f"{'queue id':<24} {'tenant':<36} {'destination':<28} {'tries':>5} "
               f"{'next attempt (UTC)':<20} {'waits for':<10} last reply")
    now = datetime.datetime.now(datetime.UTC)
    for row in rows:
        when = datetime.datetime.fromtimestamp(row["next_attempt"], datetime.UTC)
        shown = "now" if when <= now else f"{when:%Y-%m-%d %H:%M:%S}"
        click.echo(f"{row['queue_id']:<24} {row['tenant'] or '-':<36} "
                   f"{','.join(row['destination'])[:28]:<28} {row['attempts']:>5} "
                   f"{shown:<20} {row['waits_for']:<10} {row['last_reply'][:80]}")


@relay_group.command("reinject")
@click.argument("spool_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_obj
def relay_reinject(state: CliState, spool_dir: Path) -> None:
    """Move SPOOL_DIR, the spool of a relay host that will not return, into this relay's spool.

    Mount or copy the dead host's spool here first. Refuses while a relay
    delivers from SPOOL_DIR. Each message is durably in this relay's spool
    before it leaves SPOOL_DIR, with its per-recipient progress (delivered
    recipients are not sent again); running it twice is safe (a message this
    relay already has from an interrupted run is not overwritten). The dead
    relay's record of the ledger rows it took is copied too, so workers may
    resend to this relay what they had handed to the dead one. Held messages
    stay in SPOOL_DIR/hold. See docs/relay.md "Relays on other hosts".

    \b
    Example:
      swiftmail relay reinject /mnt/relay2/spool
    """
    from swiftmail_relay.spool_move import reinject

    target = _spool(state)
    total = sum(1 for _ in Spool(spool_dir).scan()) if (spool_dir / "queue").is_dir() else 0
    with click.progressbar(length=total, label="reinjecting", file=sys.stderr) as bar:
        report = reinject(spool_dir, target, progress=bar.update)
    click.echo(f"reinjected {report.moved} messages into {target.root}; removed "
               f"{report.finished} already finished and {report.already_there} this relay "
               f"already had; copied {report.records} ledger records; {report.held} held "
               f"left in {spool_dir / 'hold'}")
    for problem in report.unreadable:
        click.echo(f"unreadable, left in place: {problem}", err=True)


@relay_group.command("tls-report")
@click.option("--date", "day", envvar="SWIFTMAIL_RELAY_DATE",
              help="UTC day to report, YYYY-MM-DD (default: yesterday).")
@click.pass_obj
def relay_tls_report(state: CliState, day: str | None) -> None:
    """Print the TLS-RPT (RFC 8460) JSON reports of one UTC day, one per policy domain.

    \b
    Example:
      swiftmail relay tls-report --date 2026-12-04
    """
    import datetime as dt

    from swiftmail_relay.tls_report import build_reports

    if day is None:
        day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    try:
        dt.datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ValidationError.for_field("date", f"{day!r} is not a YYYY-MM-DD day") from None
    from swiftmail_core import redis_clients

    settings = state.settings
    config = RelayConfig.from_settings(settings)
    # Only Redis is needed: no database connection for a report.
    client = redis_clients.client(settings)
    reports = build_reports(
        client, config.redis_prefix, day,
        organization=config.tlsrpt_organization or config.hostname,
        contact=config.tlsrpt_contact or f"postmaster@{config.hostname}")
    click.echo(json.dumps(reports, indent=2))


@relay_group.command("reputation")
@click.argument("tenant_ref", metavar="TENANT")
@click.pass_obj
def relay_reputation(state: CliState, tenant_ref: str) -> None:
    """Show a TENANT's rolling bounce and complaint rates and any open sending pause.

    \b
    Example:
      swiftmail relay reputation acme
    """
    from swiftmail_relay import reputation

    from swiftmail_core.tenants import get_tenant

    state.runtime()
    tenant = get_tenant(tenant_ref)
    limits = reputation.Thresholds.from_config(RelayConfig.from_settings(state.settings))
    sample = reputation.rates(tenant.id, limits.window)
    pause = reputation.open_pause(tenant.id)
    click.echo(f"tenant {tenant.slug}: {sample.sends} sends, hard bounces {sample.hard_bounces} "
               f"({sample.bounce_rate:.2%}, limit {limits.max_bounce_rate:.2%}), complaints "
               f"{sample.complaints} ({sample.complaint_rate:.3%}, limit "
               f"{limits.max_complaint_rate:.3%}), minimum sample {limits.min_sample}")
    if pause:
        click.echo(f"sending PAUSED since {pause['paused_at']}: {pause['reason']}")
    else:
        click.echo("sending active")


@relay_group.command("resume-tenant")
@click.argument("tenant_ref", metavar="TENANT")
@click.pass_obj
def relay_resume_tenant(state: CliState, tenant_ref: str) -> None:
    """Resume a TENANT's sending after a reputation pause (rates restart from zero).

    \b
    Example:
      swiftmail relay resume-tenant acme
    """
    import getpass

    from swiftmail_relay import reputation

    from swiftmail_core.tenants import get_tenant

    runtime = state.runtime()
    tenant = get_tenant(tenant_ref)
    closed = reputation.resume(tenant.id, f"cli:{getpass.getuser()}", runtime.plugins)
    if closed is None:
        raise ValidationError.for_field("tenant", f"tenant {tenant.slug} is not paused")
    click.echo(f"resumed sending for tenant {tenant.slug} (was paused: {closed['reason']})")


@relay_group.command("retry")
@_selector_options
@click.pass_obj
def relay_retry(state: CliState, domain: str | None, tenant: str | None) -> None:
    """Try deferred mail now (all of it when no selector is given).

    \b
    Example:
      swiftmail relay retry --domain example.com
    """
    queue_ops.retry(_spool(state), _selector(state, domain, tenant, required=False))
    click.echo("retry requested")


@relay_group.command("hold")
@_selector_options
@click.pass_obj
def relay_hold(state: CliState, domain: str | None, tenant: str | None) -> None:
    """Hold matching mail (no delivery until released).

    \b
    Example:
      swiftmail relay hold --tenant acme
    """
    click.echo(f"held {queue_ops.hold(_spool(state), _selector(state, domain, tenant))} messages")


@relay_group.command("release")
@_selector_options
@click.pass_obj
def relay_release(state: CliState, domain: str | None, tenant: str | None) -> None:
    """Release held mail back into the queue.

    \b
    Example:
      swiftmail relay release --domain example.com
    """
    count = queue_ops.release(_spool(state), _selector(state, domain, tenant, required=False))
    click.echo(f"released {count} messages")


@relay_group.command("purge")
@_selector_options
@click.option("--held", is_flag=True, help="Purge from the hold queue instead.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def relay_purge(state: CliState, domain: str | None, tenant: str | None, held: bool,
                yes: bool) -> None:
    """Delete matching mail from the spool (no events are recorded).

    \b
    Example:
      swiftmail relay purge --domain typo-domain.example --yes
    """
    selector = _selector(state, domain, tenant)
    if not yes:
        click.confirm("Delete the matching messages for good?", abort=True)
    click.echo(f"purged {queue_ops.purge(_spool(state), selector, held=held)} messages")


@hookimpl
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add the ``swiftmail relay`` command group."""
    cli.add_command(relay_group)


#: A relay certificate closer than this to its expiry is a doctor warning.
CERTIFICATE_WARN_DAYS = 14


@hookimpl
def swiftmail_doctor_checks(settings: Settings) -> list[Any]:
    """Check the relay's TLS certificate (tls_cert) loads with its key and is not expiring."""
    import time

    from swiftmail_relay.server_tls import ServerTls

    from swiftmail_core.db.audit import Finding

    check = "relay TLS certificate"
    try:
        config = RelayConfig.from_settings(settings)
        if not config.tls_cert:
            return []
        tls = ServerTls(config.tls_cert, config.tls_key)
    except SwiftMailError as ex:
        return [Finding(False, check, ex.detail)]
    expires = tls.expires_at
    if expires is None:
        return [Finding(True, check, f"{config.tls_cert} loads (expiry not readable)")]
    days = (expires - time.time()) / 86400
    when = time.strftime("%Y-%m-%d", time.gmtime(expires))
    if days < 0:
        return [Finding(False, check, f"{config.tls_cert} expired on {when}: renew it, then "
                                      "`systemctl reload swiftmail-relay`")]
    return [Finding(days >= CERTIFICATE_WARN_DAYS, check,
                    f"{config.tls_cert} expires {when} (in {days:.0f} days)",
                    warning=days >= 0)]
