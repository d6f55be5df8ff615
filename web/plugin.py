"""Built-in plugin ``web``: the ``swiftmail serve`` command.

The API itself is built by ``swiftmail_web.app.create_app``; this plugin only
adds the command that runs it, registered like any third-party plugin.
"""

from __future__ import annotations

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.db.audit import Finding
from swiftmail_core.errors import SwiftMailError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings


@click.command("serve")
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True,
              envvar="SWIFTMAIL_BIND", help="Address and port to listen on.")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              envvar="SWIFTMAIL_WORKERS", help="Worker processes [default: 2 x cores + 1].")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              envvar="SWIFTMAIL_THREADS", help="Threads per worker (keep <= db_pool_size).")
@click.option("--timeout", type=click.IntRange(5, 600), default=30, show_default=True,
              envvar="SWIFTMAIL_WORKER_TIMEOUT", help="Seconds before a stuck worker restarts.")
@click.option("--drain-seconds", type=click.FloatRange(0, 300), default=0, show_default=True,
              envvar="SWIFTMAIL_DRAIN_SECONDS",
              help="After SIGTERM, keep serving this long with /readyz answering 503, so a "
                   "load balancer takes the host out first (docs/availability.md).")
@click.option("--graceful-timeout", type=click.IntRange(1, 600), default=20, show_default=True,
              envvar="SWIFTMAIL_GRACEFUL_TIMEOUT",
              help="Seconds requests in flight get to finish once the server stops.")
@click.pass_obj
def serve_command(
    state: CliState, bind: str, workers: int | None, threads: int, timeout: int,
    drain_seconds: float, graceful_timeout: int,
) -> None:
    """Serve the REST API under gunicorn.

    \b
    Examples:
      swiftmail serve
      swiftmail serve --bind 0.0.0.0:8000 --workers 5
      SWIFTMAIL_BIND=unix:/run/swiftmail.sock swiftmail serve
      swiftmail serve --bind 10.0.0.11:8000 --drain-seconds 5   # behind HAProxy
    """
    from swiftmail_web.serve import default_workers, serve

    from swiftmail_core.db.schema_version import check_schema
    from swiftmail_core.db.targets import database_targets
    from swiftmail_core.errors import ConfigurationError

    settings = state.settings
    settings.require("secret_key")
    # Before gunicorn: a schema mismatch is one line here, not a worker boot loop.
    check_schema(database_targets(settings))
    if threads > settings.db_pool_size:
        raise ConfigurationError(
            f"--threads {threads} exceeds setting 'db_pool_size' ({settings.db_pool_size}): "
            "lower --threads or raise SWIFTMAIL_DB_POOL_SIZE")
    serve(bind, workers or default_workers(), threads, settings.data_dir, timeout,
          drain_seconds=drain_seconds, graceful_timeout=graceful_timeout)


@hookimpl
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add ``swiftmail serve``."""
    cli.add_command(serve_command)


@hookimpl
def swiftmail_doctor_checks(settings: Settings) -> list[Finding]:
    """Report whether new sending domains would be given records that can resolve."""
    from swiftmail_web.config import WebConfig

    try:
        targets = WebConfig.from_settings(settings).dns_targets(settings.public_url)
    except SwiftMailError as ex:
        return [Finding(False, "sending-domain DNS targets", ex.detail)]
    return [Finding(not targets.warnings, "sending-domain DNS targets",
                    "; ".join(targets.warnings)
                    or f"include:{targets.spf_include}, CNAME {targets.return_path_target}",
                    warning=True)]
