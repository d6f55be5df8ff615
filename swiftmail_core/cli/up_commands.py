"""`swiftmail up`: every process of a single-node install, in the foreground."""

from __future__ import annotations

import signal
import socket
import sys

import click

from swiftmail_core.cli.state import CliState
from swiftmail_core.install import initialise
from swiftmail_core.local.catch_sink import CatchSink
from swiftmail_core.local.supervisor import ProcessSpec, Supervisor, swiftmail_argv
from swiftmail_core.runtime import ProcessKind
from swiftmail_core.settings import Settings


@click.command("up")
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True,
              envvar="SWIFTMAIL_BIND", help="Address and port of the API and public pages.")
@click.option("--catch/--no-catch", default=None, envvar="SWIFTMAIL_UP_CATCH",
              help="Catch outgoing mail in DATA_DIR/caught instead of delivering it "
              "[default: on with the embedded PostgreSQL, off otherwise].")
@click.pass_obj
def up(state: CliState, bind: str, catch: bool | None) -> None:
    """Run the API, worker, tracking drainer and relay together until Ctrl-C.

    The single-node install in one command, like `docker compose up`: each
    process's log lines are prefixed with its name, Ctrl-C stops them all
    gracefully, and if one exits the others are stopped too. On the
    embedded default it first initialises and migrates, and the relay
    hands every outgoing message to a local sink that keeps it as an .eml
    file in DATA_DIR/caught (open it with any mail client): nothing leaves
    this machine. With --no-catch the relay delivers to the internet.

    \b
    Examples:
      swiftmail up
      swiftmail up --bind 127.0.0.1:9000
      DATABASE_URL=... REDIS_URL=... swiftmail up --no-catch
    """
    settings = state.settings
    if settings.uses_embedded_postgres:
        initialise(state.config, state.overrides)
        settings = state.reload()
    # Starts the embedded engines the children share; fails early if down.
    state.runtime(ProcessKind.SUPERVISOR)
    if catch is None:
        catch = settings.uses_embedded_postgres
    relay_environ: dict[str, str] = {}
    sink = None
    if catch:
        sink = CatchSink(settings.data_dir / "caught").start()
        # NOTE: a relayhost on loopback must be allowed explicitly (see relay.config).
        relay_environ = {
            "SWIFTMAIL_PLUGIN_RELAY_RELAYHOST": "127.0.0.1",
            "SWIFTMAIL_PLUGIN_RELAY_SMTP_PORT": str(sink.port),
            "SWIFTMAIL_PLUGIN_RELAY_ALLOW_NETWORKS": "127.0.0.0/8",
            "SWIFTMAIL_PLUGIN_RELAY_WARMUP": "false",
        }
    common_environ = {}
    worker_environ = _worker_relays(settings)
    if settings.log_format == "auto":
        # Children write to our pipe, not a terminal: pass on what "auto" means here.
        common_environ["SWIFTMAIL_LOG_FORMAT"] = "console" if sys.stdout.isatty() else "json"
    supervisor = Supervisor([
        ProcessSpec("api", swiftmail_argv("serve", "--bind", bind, "--workers", "1"),
                    common_environ),
        ProcessSpec("worker", swiftmail_argv("worker"), {**common_environ, **worker_environ}),
        ProcessSpec("tracking", swiftmail_argv(
            "tracking", "drain", "--consumer", f"up-{socket.gethostname()}"), common_environ),
        ProcessSpec("relay", swiftmail_argv("relay", "run"), {**common_environ, **relay_environ}),
    ], echo=lambda line: click.echo(line))
    click.echo(f"up | API and public pages on http://{bind}  (GET /healthz, /v1/openapi.json)")
    if sink is not None:
        click.echo(f"up | outgoing mail is caught in {sink.directory} (one .eml per message)")
    else:
        click.echo("up | outgoing mail is delivered by the relay to the internet")
    click.echo("up | stop everything with Ctrl-C")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, supervisor.request_stop)
    try:
        exit_code = supervisor.run()
    finally:
        if sink is not None:
            sink.stop()
    if exit_code:
        raise SystemExit(exit_code)
    click.echo("up | stopped")


def _worker_relays(settings: Settings) -> dict[str, str]:
    """Point the worker's relay transport at this relay's intake, unless configured."""
    transport = settings.plugin_settings("relay_transport")
    intake = str(settings.plugin_settings("relay").get("intake_listen", "127.0.0.1:2526"))
    if "relays" in transport or intake.lower() in ("", "off", "none"):
        return {}
    host, _, port = intake.rpartition(":")
    # A wildcard listen address is reached on loopback (not a bind here).
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)  # noqa: S104
    return {"SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_RELAYS": f"{host}:{port}"}


COMMANDS = (up,)
