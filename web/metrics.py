"""Prometheus metrics of the API, multiprocess-aware under gunicorn.

``swiftmail serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports ``prometheus_client``; then ``/metrics`` aggregates every worker's
files. Without it (tests, a single process) the default registry is served.
"""

from __future__ import annotations

import os

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "swiftmail_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "swiftmail_http_request_duration_seconds", "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RATE_LIMITED = Counter("swiftmail_http_rate_limited_total", "Requests refused with 429.", ["scope"])


def observe(method: str, route: str, status: int, seconds: float) -> None:
    """Record one answered request."""
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


class MetricsResource:
    """``GET /metrics``: the Prometheus text exposition."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return every metric of every worker."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(registry)
