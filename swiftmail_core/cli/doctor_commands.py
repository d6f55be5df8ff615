"""`swiftmail doctor`: is this install healthy and isolated?"""

from __future__ import annotations

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.doctor import run_checks


@click.command()
@click.pass_obj
def doctor(state: CliState) -> None:
    """Check the database, roles, RLS posture, migrations, Redis, plugins and DNS.

    Exits 1 when any check fails, printing what to fix. A WARN line is
    something that works here but not for real mail (it does not fail).

    \b
    Example:
      swiftmail doctor
    """
    findings = run_checks(state.settings)
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
