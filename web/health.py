"""``/healthz`` (the process answers) and ``/readyz`` (ready for traffic).

``/readyz`` answers 503 while the server drains after SIGTERM
(``web.draining``) and while PostgreSQL or Redis does not answer.

One readiness check runs at a time in a process. A database that has gone
silent (its host lost) holds a check for seconds; a load balancer probing
every second would otherwise pile checks up until every request thread waits
in one, and ``/healthz`` (and every request) then times out too: the cluster
test saw HAProxy left with no live host during a PostgreSQL failover. A probe
that comes while a check runs gets the last answer if the running check is
young, or 503 if it has already taken longer than ``SLOW_CHECK_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import falcon
import redis
from swiftmail_web import draining

from swiftmail_core.db import app_db

#: A readiness check running longer than this means "not ready" to the probes that find it.
SLOW_CHECK_SECONDS = 1.0


class HealthResource:
    """Liveness: answers 200 while the process can serve requests."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return ``{"status": "ok"}``."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """Readiness: 200 when the database and Redis answer and the server is not draining."""

    public = True

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client
        self._checking = threading.Lock()
        self._started = 0.0  # monotonic start of the check in flight
        self._last: tuple[int, dict[str, Any]] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer 503 while draining, else check PostgreSQL (as the app role) and Redis."""
        if draining.is_draining():
            resp.status = 503
            resp.media = {"status": "draining", "checks": {"process": "draining"}}
            return
        if not self._checking.acquire(blocking=False):
            running = time.monotonic() - self._started
            if running < SLOW_CHECK_SECONDS and self._last is not None:
                resp.status, resp.media = self._last
            else:
                resp.status = 503
                resp.media = {"status": "unavailable",
                              "checks": {"process": f"a check has run for {running:.1f} s"}}
            return
        try:
            self._started = time.monotonic()
            self._last = self._check()
        finally:
            self._checking.release()
        resp.status, resp.media = self._last

    def _check(self) -> tuple[int, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            with app_db.connection_context():
                app_db.execute_sql("SELECT 1")
            checks["database"] = "ok"
        except Exception as ex:
            checks["database"] = f"unavailable: {type(ex).__name__}"
        try:
            self.redis.ping()
            checks["redis"] = "ok"
        except Exception as ex:
            checks["redis"] = f"unavailable: {type(ex).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return (200 if ready else 503,
                {"status": "ready" if ready else "unavailable", "checks": checks})
