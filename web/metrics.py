"""Prometheus metrics of the API, multiprocess-aware under gunicorn.

``swiftmail serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports ``prometheus_client``; then ``/metrics`` aggregates every worker's
files. Without it (tests, a single process) the default registry is served.

Each scrape also serves the cluster-wide gauges of ``swiftmail_core.ops_gauges``
(the same on every API host: aggregate them with ``max``), collected at most
once per interval by one process and shared through Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, labels: list[str],
              samples: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


class OpsCollector(Collector):
    """The cluster-wide gauges of one snapshot (``swiftmail_core.ops_gauges``)."""

    def __init__(self, snapshot: dict[str, Any] | None) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield the snapshot's gauges; nothing when there is no snapshot yet."""
        snap = self.snapshot
        if not snap:
            return
        yield _gauge("swiftmail_ops_collected_timestamp_seconds",
                     "When these cluster-wide gauges were collected (Unix time).",
                     snap["collected_at"])
        yield _gauge("swiftmail_outbox_oldest_due_age_seconds",
                     "How long the oldest due outbox row (queued or deferred) has waited.",
                     snap["outbox_oldest_due_age_seconds"])
        yield _labelled("swiftmail_tenant_complaint_rate",
                        "Complaints per delivered message over the last 24 hours, for the "
                        "tenants with the highest rates (at most complaint_tenants series).",
                        ["tenant"], [([row["tenant"]], row["rate"])
                                     for row in snap["complaint_rates"]])
        yield _labelled("swiftmail_jobs_failed_last_hour",
                        "Import and export jobs that failed in the last hour, by kind.",
                        ["kind"], sorted(([kind], count) for kind, count
                                         in snap["jobs_failed_last_hour"].items()))
        yield _gauge("swiftmail_webhook_deliveries_abandoned_last_hour",
                     "Webhook deliveries given up (attempts used up) in the last hour.",
                     snap["webhook_deliveries_abandoned_last_hour"])
        yield _gauge("swiftmail_tracking_backlog_entries",
                     "Tracking hits in the Redis stream not yet stored as events.",
                     snap["tracking_backlog_entries"])
        yield _gauge("swiftmail_tracking_backlog_oldest_age_seconds",
                     "Age of the oldest tracking hit not yet stored.",
                     snap["tracking_backlog_oldest_age_seconds"])
        replication = snap["replication"]
        yield _gauge("swiftmail_db_standbys",
                     "Standbys streaming from the PostgreSQL primary.", replication["standbys"])
        yield _labelled("swiftmail_db_replication_lag_seconds",
                        "Replay lag of each standby (needs pg_monitor for the system role).",
                        ["standby"], [([row["standby"]], row["seconds"])
                                      for row in replication["lag"]])
        yield _labelled("swiftmail_db_replication_lag_bytes",
                        "WAL bytes each standby has not replayed (needs pg_monitor).",
                        ["standby"], [([row["standby"]], row["bytes"])
                                      for row in replication["lag"]])


class MetricsResource:
    """``GET /metrics``: the Prometheus text exposition."""

    public = True

    def __init__(self, ops_snapshot: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self.ops_snapshot = ops_snapshot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return every metric of every worker, then the cluster-wide gauges."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        data = generate_latest(registry)
        if self.ops_snapshot is not None:
            ops = CollectorRegistry(auto_describe=False)
            ops.register(OpsCollector(self.ops_snapshot()))
            data += generate_latest(ops)
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = data
