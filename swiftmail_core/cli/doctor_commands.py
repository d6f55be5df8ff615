"""`swiftmail doctor`: is this install healthy and isolated?"""

from __future__ import annotations

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.doctor import run_checks


@click.command()
@click.option(
    "--no-outside-dns", "no_outside_dns", is_flag=True,
    help="A resolver that does not answer is a warning, not a failure (hosts without a relay).",
)
@click.pass_obj
def doctor(state: CliState, no_outside_dns: bool) -> None:
    """Check the database, roles, RLS posture, migrations, Redis, plugins and DNS.

    Exits 1 when any check fails, printing what to fix. A WARN line is
    something that works here but not for real mail (it does not fail).

    \b
    Example:
      swiftmail doctor
      swiftmail doctor --no-outside-dns
    """
    findings = run_checks(state.settings, outside_dns=not no_outside_dns)
    for finding in findings:
        mark = "ok  " if finding.ok else "WARN" if finding.warning else "FAIL"
        detail = f" ({finding.detail})" if finding.detail else ""
        click.echo(f"{mark} {finding.check}{detail}")
    failed = [finding for finding in findings if not finding.ok and not finding.warning]
    warned = sum(1 for finding in findings if not finding.ok and finding.warning)
    if failed:
        click.echo(f"{len(failed)} check(s) failed", err=True)
        raise SystemExit(1)
    click.echo(f"all {len(findings) - warned} checks passed"
               + (f", {warned} warning(s) above" if warned else ""))


COMMANDS = (doctor,)
