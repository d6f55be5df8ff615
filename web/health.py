"""``/healthz`` (the process answers) and ``/readyz`` (PostgreSQL and Redis answer)."""

from __future__ import annotations

from typing import Any

import falcon
import redis

from swiftmail_core.db import app_db


class HealthResource:
    """Liveness: answers 200 while the process can serve requests."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return ``{"status": "ok"}``."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """Readiness: 200 when the database and Redis answer, else 503 naming which."""

    public = True

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Check PostgreSQL (as the app role) and Redis."""
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
