"""The Falcon application: ``create_app`` builds it, ``get_app`` serves it.

``create_app(settings, plugin_manager)`` is a pure factory: it connects
nothing and reads no environment; collaborators (Redis client, config, the
lifecycle functions) are passed in. ``get_app()`` is what gunicorn imports:
it loads settings, starts the runtime and calls ``create_app``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import falcon
import redis
from swiftmail_web import errors, jsonio
from swiftmail_web.body_limit import BodyLimit
from swiftmail_web.config import WebConfig
from swiftmail_web.health import HealthResource, ReadyResource
from swiftmail_web.idempotency import IdempotencyStore
from swiftmail_web.metrics import MetricsResource
from swiftmail_web.middleware import (
    Authenticate,
    Guard,
    Idempotency,
    RequestContext,
    TenantTransaction,
)
from swiftmail_web.ratelimit import Limits, RateLimiter

from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings


def create_app(
    settings: Settings,
    plugin_manager: PluginManager,
    *,
    redis_client: redis.Redis | None = None,
    config: WebConfig | None = None,
) -> falcon.App:
    """Build the API application; the database handles must already be connected."""
    from swiftmail_web.openapi import OpenApiResource
    from swiftmail_web.resources import add_v1_routes

    config = config or WebConfig.from_settings(settings)
    if redis_client is None:
        from swiftmail_core import redis_clients

        # NOTE: the rate limiter fails open, so a request never waits out a failover.
        redis_client = redis_clients.client(settings, timeout=2.0, retries=1)
    limiter = RateLimiter(
        redis_client,
        Limits(config.rate_limit_per_tenant, config.rate_limit_per_key),
        prefix=config.redis_prefix,
    )
    idempotency = IdempotencyStore()
    app = falcon.App(
        middleware=[
            RequestContext(),
            BodyLimit(),
            Authenticate(plugin_manager),
            Guard(limiter),
            Idempotency(idempotency),
            TenantTransaction(idempotency),
        ],
    )
    handler = jsonio.json_handler()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(redis_client))
    app.add_route("/metrics", MetricsResource(_ops_snapshot(settings, config, redis_client)))
    services: dict[str, Any] = {"settings": settings, "redis": redis_client, "config": config,
                                "plugins": plugin_manager}
    add_v1_routes(app, services)
    app.add_route("/v1/openapi.json", OpenApiResource(app))
    plugin_manager.register_routes(app)
    return app


def _ops_snapshot(settings: Settings, config: WebConfig,
                  redis_client: Any) -> Callable[[], dict[str, Any] | None]:
    """Return what /metrics calls for the shared cluster-wide gauges."""
    from swiftmail_web.public.services import PublicConfig

    from swiftmail_core import ops_gauges

    limits = ops_gauges.GaugeLimits(
        interval_seconds=max(5, config.ops_metrics_interval),
        complaint_tenants=max(0, config.complaint_rate_tenants),
        complaint_min_delivered=config.complaint_rate_min_delivered)
    return functools.partial(ops_gauges.current, redis_client, config.redis_prefix,
                             PublicConfig.from_settings(settings).stream, limits)


def get_app() -> falcon.App:
    """Return the application for gunicorn: settings, runtime, then ``create_app``."""
    from swiftmail_core.logs import configure_logging
    from swiftmail_core.runtime import ProcessKind, start
    from swiftmail_core.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    runtime = start(settings, process=ProcessKind.API)
    return create_app(settings, runtime.plugins)
