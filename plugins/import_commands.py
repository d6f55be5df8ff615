"""Built-in plugin: `swiftmail import ...`, `swiftmail export ...`, `swiftmail jobs run`."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from swiftmail_core.cli.params import UUID_TEXT
from swiftmail_core.cli.state import CliState
from swiftmail_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from swiftmail_core.jobs import JobRow


def _tenant_id(state: CliState, tenant_ref: str) -> uuid.UUID:
    from swiftmail_core.tenants import get_tenant

    state.runtime()
    return get_tenant(tenant_ref).id


def _print_job(job: JobRow) -> None:
    result = job.result
    click.echo(f"job {job.id}: {job.status}")
    if job.error:
        click.echo(f"  error: {job.error}")
    for key in ("rows_ok", "rows_failed", "duplicates", "created", "updated", "unchanged",
                "skipped", "subscribed", "rows", "bytes"):
        if key in result and (result[key] or key in ("rows_ok", "rows")):
            click.echo(f"  {key}: {result[key]:,}")
    for sample in result.get("errors_sample", [])[:5]:
        click.echo(f"  row {sample['row']}: {sample['reason']}")


@click.group("import")
def import_group() -> None:
    """Import contacts or suppressions from CSV (plain or gzip).

    \b
    Examples:
      swiftmail import contacts people.csv --tenant acme --list Newsletter
      swiftmail import suppressions bounces.csv.gz --tenant acme
      swiftmail import report JOB_ID --tenant acme -o errors.csv
    """


def _run_import(
    state: CliState, kind: str, file: Path, tenant_ref: str, params: dict[str, Any]
) -> None:
    from swiftmail_core.imports.service import import_file

    tenant_id = _tenant_id(state, tenant_ref)
    runtime = state.runtime()
    size = file.stat().st_size
    with click.progressbar(length=size, label=f"importing {file.name}", file=sys.stderr,
                           show_pos=False, show_percent=True, show_eta=True) as bar:
        def listener(done: int, total: int | None) -> None:
            bar.update(max(0, done - bar.pos))

        job = import_file(runtime, tenant_id, kind, file, params, listener)
    _print_job(job)
    if job.result_key:
        click.echo(f"  error report: swiftmail import report {job.id} --tenant {tenant_ref}")
    if job.status != "succeeded":
        sys.exit(1)


@import_group.command("contacts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.option("--list", "list_ref", envvar="SWIFTMAIL_IMPORT_LIST",
              help="Subscribe every imported contact to this list (name or id).")
@click.option("--map", "mappings", multiple=True, metavar="COLUMN=TARGET",
              help="Map a column to email, name, attributes.KEY, or '-' to ignore it.")
@click.option("--skip-existing", is_flag=True, envvar="SWIFTMAIL_IMPORT_SKIP_EXISTING",
              help="Leave contacts that already exist untouched (default: update them).")
@click.pass_obj
def import_contacts(
    state: CliState, file: Path, tenant_ref: str, list_ref: str | None,
    mappings: tuple[str, ...], skip_existing: bool,
) -> None:
    """Import contacts from FILE (CSV, or CSV.gz), with a progress bar.

    Columns named email and name map to those fields; every other column
    becomes an attribute named after its header, unless --map says otherwise.
    Bad rows are skipped and listed in an error report (row numbers count the
    header as row 1).

    \b
    Examples:
      swiftmail import contacts people.csv --tenant acme --list Newsletter
      swiftmail import contacts export.csv.gz --tenant acme \\
          --map "E-mail Address=email" --map "City=attributes.city" --map Notes=-
      swiftmail import contacts people.csv --tenant acme --skip-existing
    """
    params = {"map": list(mappings), "skip_existing": skip_existing, "list": list_ref}
    _run_import(state, "import_contacts", file, tenant_ref, params)


@import_group.command("suppressions")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.option("--map", "mappings", multiple=True, metavar="COLUMN=TARGET",
              help="Map a column to email, reason, detail, or '-' to ignore it.")
@click.pass_obj
def import_suppressions(
    state: CliState, file: Path, tenant_ref: str, mappings: tuple[str, ...]
) -> None:
    """Import suppressed addresses from FILE (columns: email, reason, detail).

    \b
    Examples:
      swiftmail import suppressions bounces.csv --tenant acme
      swiftmail import suppressions old.csv.gz --tenant acme --map Address=email
    """
    _run_import(state, "import_suppressions", file, tenant_ref, {"map": list(mappings)})


@import_group.command("report")
@click.argument("job_id", type=UUID_TEXT)
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report here (default: standard output).")
@click.pass_obj
def import_report(state: CliState, job_id: str, tenant_ref: str, output: Path | None) -> None:
    """Print the error report (row, reason, value) of import JOB_ID.

    \b
    Example:
      swiftmail import report 7d0c...e1 --tenant acme -o errors.csv
    """
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.imports.service import open_error_report

    tenant_id = _tenant_id(state, tenant_ref)
    storage = state.runtime().plugins.storage()
    with tenant_tx(tenant_id):
        handle = open_error_report(storage, job_id)
    _copy_out(handle, output)


def _copy_out(handle: BinaryIO, output: Path | None) -> None:
    with handle:
        target = output.open("wb") if output else sys.stdout.buffer
        try:
            while chunk := handle.read(1 << 16):
                target.write(chunk)
        finally:
            if output:
                target.close()
            else:
                target.flush()


@click.command("export")
@click.argument("what", type=click.Choice(["contacts", "suppressions", "ledger"]))
@click.option("--tenant", "tenant_ref", required=True, envvar="SWIFTMAIL_TENANT",
              help="Tenant slug or id.")
@click.option("--list", "list_id", help="contacts: only this list's subscribers (list id).")
@click.option("--campaign", "campaign_id", help="ledger: only this campaign (campaign id).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the CSV here (default: standard output).")
@click.pass_obj
def export_command(
    state: CliState, what: str, tenant_ref: str, list_id: str | None,
    campaign_id: str | None, output: Path | None,
) -> None:
    """Export WHAT (contacts, suppressions, ledger) as CSV.

    Cells a spreadsheet would run as formulas are prefixed with an apostrophe.

    \b
    Examples:
      swiftmail export contacts --tenant acme -o contacts.csv
      swiftmail export ledger --tenant acme --campaign 5f2e... -o ledger.csv
    """
    from swiftmail_core.errors import ValidationError
    from swiftmail_core.exports.service import export_now

    tenant_id = _tenant_id(state, tenant_ref)
    runtime = state.runtime()
    params: dict[str, str] = {}
    if what == "contacts" and list_id:
        params["list"] = list_id
    if what == "ledger" and campaign_id:
        params["campaign"] = campaign_id
    job = export_now(runtime, tenant_id, f"export_{what}", params)
    if job.status != "succeeded" or job.result_key is None:
        raise ValidationError(f"export {job.id} {job.status}: {job.error}")
    _copy_out(runtime.plugins.storage().open_read(job.result_key), output)
    click.echo(f"exported {job.rows_ok:,} rows (job {job.id})", err=True)


@click.group("jobs")
def jobs_group() -> None:
    """Run background jobs (imports, exports).

    \b
    Example:
      swiftmail jobs run --limit 5
    """


@jobs_group.command("run")
@click.option("--limit", default=10, show_default=True, envvar="SWIFTMAIL_JOBS_LIMIT",
              help="Most jobs to run.")
@click.pass_obj
def jobs_run(state: CliState, limit: int) -> None:
    """Claim and run queued jobs once (the worker does this periodically).

    \b
    Example:
      swiftmail jobs run --limit 5
    """
    from swiftmail_core.jobs import run_pending_jobs

    ran = run_pending_jobs(state.runtime(), limit)
    click.echo(f"ran {ran} job(s)")


@hookimpl
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add the import, export and jobs commands."""
    cli.add_command(import_group)
    cli.add_command(export_command)
    cli.add_command(jobs_group)
