"""``/healthz`` (the process answers) and ``/readyz`` (ready for traffic).

``/readyz`` answers 503 while the server drains after SIGTERM
(``web.draining``) and while PostgreSQL or Redis does not answer.
"""

from __future__ import annotations

from typing import Any

import falcon
import redis
from swiftmail_web import draining

from swiftmail_core.db import app_db


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

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer 503 while draining, else check PostgreSQL (as the app role) and Redis."""
        if draining.is_draining():
            resp.status = 503
            resp.media = {"status": "draining", "checks": {"process": "draining"}}
            return
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
        resp.status = 200 if ready else 503
        resp.media = {"status": "ready" if ready else "unavailable", "checks": checks}
