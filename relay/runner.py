"""Running the relay: engine, listeners, metrics, until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import signal
from typing import Any

import structlog
from prometheus_client import start_http_server
from swiftmail_relay.auth_failures import AuthFailures
from swiftmail_relay.bounces import BounceHandler
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.engine import Relay
from swiftmail_relay.outcomes import record_outcomes
from swiftmail_relay.platform_auth import RedisReplayGuard
from swiftmail_relay.platform_intake import serve_intake
from swiftmail_relay.server_tls import server_tls
from swiftmail_relay.shaping import RedisShaper
from swiftmail_relay.sink import OutcomeSink
from swiftmail_relay.submission import make_smtp_factory, serve_submission
from swiftmail_relay.tls_policy import TlsPolicies
from swiftmail_relay.tls_report import RedisTlsRecorder

from swiftmail_core import redis_clients
from swiftmail_core.runtime import Runtime

log = structlog.get_logger("swiftmail.relay")


async def run_relay(runtime: Runtime, config: RelayConfig, *, deliver: bool = True) -> None:
    """Start delivery and the listeners; return after SIGTERM or SIGINT."""
    settings = runtime.settings
    # Clients this function owns (the shaper closes its own in relay.stop()): closed
    # at the end, or the interpreter's exit warns about their unclosed connections.
    owned: list[Any] = []

    def redis_client() -> Any:
        owned.append(redis_clients.async_client(settings))
        return owned[-1]

    relay = Relay(
        settings, config, throttle=RedisShaper(config, redis_clients.async_client(settings)),
        sink=OutcomeSink(functools.partial(record_outcomes, plugins=runtime.plugins)),
        tls_policies=TlsPolicies(settings, config, recorder=RedisTlsRecorder(
            redis_client(), config.redis_prefix)),
    )
    servers = []
    tls = server_tls(config.tls_cert, config.tls_key)
    # SIGHUP (`systemctl reload`) is handled from the start, with or without a
    # certificate: unhandled, it ends the relay, and systemd counts an exit on
    # SIGHUP as clean, so Restart=on-failure does not bring it back.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, tls.reload if tls else _nothing_to_reload)
    if deliver:
        await relay.start()
    if config.submission_listen:
        servers.append(await serve_submission(
            settings, config, runtime.plugins, notify=relay.notify if deliver else None,
            tls=tls, auth_failures=AuthFailures(client=redis_client(),
                                                prefix=config.redis_prefix)))
    if config.intake_listen:
        intake = await serve_intake(
            settings, config, notify=relay.notify if deliver else None,
            guard=RedisReplayGuard(redis_client(), config.redis_prefix))
        if tls and intake.tls_context is not None:
            tls.attach(intake.tls_context)
        servers.append(intake)
    if config.bounce_listen:
        handler = BounceHandler(settings, config,
                                functools.partial(record_outcomes, plugins=runtime.plugins))
        # STARTTLS offered (never required: any MTA may send a bounce) with the same certificate.
        factory = make_smtp_factory(handler, config, trusted=True,
                                    tls_context=tls.context if tls else None)
        host, port = config.bounce_listen
        servers.append(await asyncio.get_running_loop().create_server(
            factory, host, port, reuse_port=True))
        log.info("bounce_listening", host=host, port=port)
    if config.metrics_listen:
        start_http_server(config.metrics_listen[1], addr=config.metrics_listen[0])
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    watcher = None
    if tls:
        # A renewed certificate: SIGHUP (above), or the files changing, loads it for new sessions.
        watcher = asyncio.create_task(tls.watch(config.tls_reload_check_seconds))
    await stopping.wait()
    log.info("relay_stopping")
    if watcher:
        watcher.cancel()
    for server in servers:
        server.close()
    if deliver:
        await relay.stop()
    await asyncio.gather(*(client.aclose() for client in owned), return_exceptions=True)


def _nothing_to_reload() -> None:
    log.info("relay_reload_ignored", reason="no tls_cert configured")
