"""Built-in tracking plugin: public routes, the drainer and webhook commands.

Registers the open pixel, click redirect and subscriber pages
(``web.public``), the ``/v1`` analytics routes, ``swiftmail tracking drain``,
``swiftmail tracking serve`` (the hot path under uvicorn) and
``swiftmail webhooks deliver``. Webhook deliveries are queued by
``record_events`` in the transaction that stores each event.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import click
import falcon

from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings
from swiftmail_core.tracking_ingest.drainer import DEFAULT_BATCH_SIZE

log = logging.getLogger("swiftmail.webhooks")


def _redis_client(settings: Settings):
    from swiftmail_core import redis_clients

    return redis_clients.client(settings)


@hookimpl
def swiftmail_register_routes(
    app: falcon.App, settings: Settings, plugin_manager: PluginManager
) -> None:
    """Add the public endpoints and the analytics API."""
    from swiftmail_web.public import add_public_routes
    from swiftmail_web.public.services import PublicServices
    from swiftmail_web.resources import analytics

    services = PublicServices.build(settings, _redis_client(settings), plugin_manager)
    add_public_routes(app, services)
    for path, resource in analytics.routes({"settings": settings}):
        app.add_route(path, resource)


@click.group("tracking")
def tracking_group() -> None:
    """Tracking hits: drain the Redis stream into events.

    \b
    Example:
      swiftmail tracking drain --consumer web1-drainer
    """


@tracking_group.command("drain")
@click.option("--consumer", envvar="SWIFTMAIL_TRACKING_CONSUMER",
              default=lambda: f"{socket.gethostname()}-drainer",
              help="Consumer name; keep it stable so a restart resumes its pending hits.")
@click.option("--batch-size", envvar="SWIFTMAIL_TRACKING_BATCH_SIZE", default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Hits stored per transaction.")
@click.option("--once", is_flag=True, help="Drain what is there, then exit.")
@click.pass_obj
def drain(state, consumer: str, batch_size: int, once: bool) -> None:
    """Store tracking hits from the Redis stream as events (runs until stopped).

    Hits are acknowledged only after their events are committed, so a killed
    drainer loses nothing and a restarted one counts nothing twice.

    \b
    Examples:
      swiftmail tracking drain
      swiftmail tracking drain --consumer web1-drainer --batch-size 1000
      swiftmail tracking drain --once
    """
    from swiftmail_web.public.services import PublicConfig

    from swiftmail_core.runtime import ProcessKind
    from swiftmail_core.startup_gc import freeze_startup_objects
    from swiftmail_core.tracking_ingest import HitStream
    from swiftmail_core.tracking_ingest.drainer import Drainer

    runtime = state.runtime(ProcessKind.TRACKING_DRAINER)
    config = PublicConfig.from_settings(runtime.settings)
    stream = HitStream(runtime.redis, config.stream)
    stream.ensure_group()
    drainer = Drainer(stream, consumer, runtime.plugins, batch_size=batch_size,
                      block_ms=200 if once else 1000)
    if once:
        total = 0
        while (count := drainer.drain_once()) > 0:
            total += count
        click.echo(f"drained {total} hits")
        return
    freeze_startup_objects()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Finish the batch in hand, then exit 0 (systemd's stop is SIGTERM).
        # Installed before announcing readiness: a stop right after start counts too.
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"draining {config.stream} as {consumer} (pid {os.getpid()})", err=True)
    drainer.run(stop)
    click.echo("drainer stopped", err=True)


@tracking_group.command("serve")
@click.option("--bind", "-b", default="127.0.0.1:8001", show_default=True,
              envvar="SWIFTMAIL_TRACKING_BIND",
              help="Address and port (or unix:PATH) to listen on.")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              envvar="SWIFTMAIL_TRACKING_WORKERS", help="Worker processes [default: one per core].")
@click.option("--graceful-timeout", type=click.IntRange(1, 600), default=20, show_default=True,
              envvar="SWIFTMAIL_GRACEFUL_TIMEOUT",
              help="Seconds requests in flight get to finish once the server stops.")
@click.pass_obj
def serve(state, bind: str, workers: int | None, graceful_timeout: int) -> None:
    """Serve the open pixel and click redirect under uvicorn (the hot path).

    Only /t/o/{token}.gif and /t/c/{token}; route /t/ here and everything
    else to `swiftmail serve`. A hit is answered once it is in Redis; the
    hits of concurrent requests share one round trip. The visitor's address
    comes from the [plugins.tracking] trusted_hops / trusted_proxies
    settings only (uvicorn's proxy-headers handling is off).

    \b
    Examples:
      swiftmail tracking serve
      swiftmail tracking serve --bind 0.0.0.0:8001 --workers 2
    """
    from swiftmail_web.public.asgi_server import default_workers
    from swiftmail_web.public.asgi_server import serve as serve_hot_path

    from swiftmail_core.db.schema_version import check_schema
    from swiftmail_core.db.targets import database_targets

    settings = state.settings
    settings.require("secret_key")
    # Before uvicorn: a schema mismatch is one line here, not a worker boot loop.
    check_schema(database_targets(settings))
    if state.config:
        os.environ["SWIFTMAIL_CONFIG"] = str(state.config)  # each worker loads its settings
    serve_hot_path(bind, workers or default_workers(), graceful_timeout)


@click.group("webhooks")
def webhooks_group() -> None:
    """Outgoing webhooks: deliver, retry and disable.

    \b
    Example:
      swiftmail webhooks deliver
    """


@webhooks_group.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due, then exit.")
@click.option("--interval", envvar="SWIFTMAIL_WEBHOOKS_INTERVAL", default=1.0,
              show_default=True, help="Seconds between polls when idle.")
@click.pass_obj
def deliver(state, once: bool, interval: float) -> None:
    """POST due webhook deliveries, signed, concurrently, with retries and backoff.

    Settings webhook_concurrency (POSTs at once) and
    webhook_endpoint_concurrency (per webhook, across deliverers) bound it.

    \b
    Examples:
      swiftmail webhooks deliver
      swiftmail webhooks deliver --once
    """
    from swiftmail_core.runtime import ProcessKind
    from swiftmail_core.webhooks.dispatcher import Dispatcher
    from swiftmail_core.webhooks.leases import reclaim_expired_leases

    runtime = state.runtime(ProcessKind.WEBHOOK_DELIVERER)
    dispatcher = Dispatcher.from_settings(runtime.settings, runtime.plugins)
    while True:
        try:
            count = dispatcher.deliver_due()
            if count == 0:
                reclaim_expired_leases()  # as the sweeper does, for a deliverer run alone
        except Exception:
            if once:
                raise
            # NOTE: a database failover must not end the deliverer: the next poll reconnects.
            log.exception("webhook delivery round failed; retrying after the interval")
            time.sleep(interval)
            continue
        if once and count == 0:
            return
        if count == 0:
            time.sleep(interval)


@hookimpl
def swiftmail_register_commands(cli: click.Group) -> None:
    """Add ``swiftmail tracking`` and ``swiftmail webhooks``."""
    cli.add_command(tracking_group)
    cli.add_command(webhooks_group)
