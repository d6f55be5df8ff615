"""Serve the tracking hot path (``swiftmail_web.public.asgi``) under uvicorn.

``swiftmail tracking serve`` runs this: uvicorn workers with uvloop and
httptools, one per core by default, each building the app with
``create_served_app`` after it starts. The pixel and the click cost about a
quarter of the CPU per hit they cost under gunicorn's gthread workers
(docs/benchmarks.md, "Latency at a fixed rate").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from swiftmail_core.startup_gc import freeze_startup_objects

if TYPE_CHECKING:
    import falcon.asgi

APP = "swiftmail_web.public.asgi_server:create_served_app"


def create_served_app() -> falcon.asgi.App:
    """Build one uvicorn worker's app, then freeze what its start-up allocated.

    So the worker's full garbage collections skip the modules, settings and
    app (``swiftmail_core.startup_gc``): they took 48-124 ms each at 5,000
    hits/s, every request on the worker waiting, and take a few now.
    """
    from swiftmail_web.public import asgi

    app = asgi.create_app()
    freeze_startup_objects()
    return app


def default_workers() -> int:
    """Return the worker count for this machine: one per core (the loop never blocks)."""
    return os.cpu_count() or 1


def server_options(bind: str, workers: int = 1, graceful_timeout: int = 20) -> dict[str, Any]:
    """Return uvicorn's keyword arguments for ``bind`` (``HOST:PORT`` or ``unix:PATH``).

    APPSEC: ``proxy_headers`` is off. uvicorn's own middleware would replace
    the peer address with an ``X-Forwarded-For`` entry (for any request from
    loopback) before the app sees it; the app alone decides which proxies it
    trusts (``[plugins.tracking] trusted_hops`` / ``trusted_proxies``).
    """
    options: dict[str, Any] = {
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,
        "log_level": "warning",
        "backlog": 2048,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": graceful_timeout,
    }
    if bind.startswith("unix:"):
        options["uds"] = bind[len("unix:"):]
        return options
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        from swiftmail_core.errors import ConfigurationError

        raise ConfigurationError(f"--bind {bind!r} is not HOST:PORT or unix:PATH "
                                 "(for example 127.0.0.1:8001)")
    options["host"] = host.strip("[]")
    options["port"] = int(port)
    return options


def serve(bind: str, workers: int, graceful_timeout: int = 20) -> None:
    """Run uvicorn with the hot-path app until it is stopped (SIGTERM or Ctrl-C)."""
    import uvicorn

    uvicorn.run(APP, factory=True, **server_options(bind, workers, graceful_timeout))
