"""Where each database role connects: DSNs derived from the settings.

``database_url`` names the server and the database; each role (owner, app,
system) connects to that database with its own name and password. With no
``database_url`` the embedded PostgreSQL in ``data_dir`` is used.

A primary with standbys is named by a libpq multi-host URL, e.g.
``postgresql://db1:5432,db2:5432/swiftmail?target_session_attrs=read-write``:
libpq tries each host in turn and keeps the one that accepts writes, so a
new connection after a failover finds the new primary. Every DSN also gets a
connect timeout per host and TCP keepalives with ``tcp_user_timeout``
(unless the URL sets its own), so a silent server is given up rather than
waited on until the kernel's default of many minutes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from psycopg2.extensions import make_dsn, parse_dsn

from swiftmail_core import embedded
from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings

Role = Literal["owner", "app", "system"]
EMBEDDED_DATABASE = "swiftmail"


@dataclasses.dataclass(frozen=True)
class DatabaseTargets:
    """The admin DSN and the three role DSNs of one install."""

    admin_dsn: str
    database: str
    role_names: dict[str, str]
    role_dsns: dict[str, str]
    #: The app role on ``analytics_database_url`` (statistics reads), None when unset.
    analytics_dsn: str | None = None

    def dsn(self, role: Role) -> str:
        """Return the DSN a role connects with."""
        return self.role_dsns[role]


def _parse(url: str, setting: str) -> dict[str, str]:
    try:
        return parse_dsn(url)
    except Exception as ex:
        raise ConfigurationError(
            f"setting {setting!r} is not a valid PostgreSQL URL ({ex}): "
            "expected postgresql://user:password@host:port/dbname"
        ) from ex


def connection_options(settings: Settings) -> dict[str, str]:
    """Return the libpq timeout and keepalive options the settings ask for."""
    dead = max(3, int(settings.db_dead_connection_seconds))
    return {
        "connect_timeout": str(max(1, int(settings.db_connect_timeout_seconds))),
        "keepalives": "1",
        # Probing starts after dead/2 idle seconds; 3 unanswered probes dead/6 apart end it.
        "keepalives_idle": str(max(1, dead // 2)),
        "keepalives_interval": str(max(1, dead // 6)),
        "keepalives_count": "3",
        # Data sent and not acknowledged for this long ends the connection too.
        "tcp_user_timeout": str(dead * 1000),
    }


def database_targets(settings: Settings) -> DatabaseTargets:
    """Resolve the admin and per-role DSNs, starting the embedded server if needed."""
    if settings.uses_embedded_postgres:
        admin_url = embedded.postgres_admin_url(settings.data_dir)
        admin = _parse(admin_url, "database_url")
        location = {"host": admin["host"], "dbname": EMBEDDED_DATABASE}
        if "port" in admin:
            location["port"] = admin["port"]
    else:
        assert settings.database_url is not None
        parsed = _parse(settings.database_url, "database_url")
        if "dbname" not in parsed:
            raise ConfigurationError(
                "setting 'database_url' names no database: add it, e.g. "
                "postgresql://host:5432/swiftmail"
            )
        location = {k: v for k, v in parsed.items() if k not in ("user", "password")}
        admin_url = settings.database_admin_url or settings.database_url
        admin = _parse(admin_url, "database_admin_url")
    options = connection_options(settings)
    location = {**options, **location}
    admin_dsn = make_dsn(**{**options, **admin, "dbname": admin.get("dbname", "postgres")})
    names = {
        "owner": settings.db_owner_role,
        "app": settings.db_app_role,
        "system": settings.db_system_role,
    }
    passwords = {
        "owner": settings.db_owner_password,
        "app": settings.db_app_password,
        "system": settings.db_system_password,
    }
    role_dsns = {}
    for role, name in names.items():
        params: dict[str, str] = {**location, "user": name, "application_name": f"swiftmail-{role}"}
        password = passwords[role]
        if password:
            params["password"] = password
        role_dsns[role] = make_dsn(**params)
    return DatabaseTargets(
        admin_dsn=admin_dsn,
        database=location["dbname"],
        role_names=names,
        role_dsns=role_dsns,
        analytics_dsn=_analytics_dsn(settings, options),
    )


def _analytics_dsn(settings: Settings, options: dict[str, str]) -> str | None:
    """Return the app role's DSN on the analytics replica, None when none is set."""
    if not settings.analytics_database_url:
        return None
    parsed = _parse(settings.analytics_database_url, "analytics_database_url")
    if "dbname" not in parsed:
        raise ConfigurationError(
            "setting 'analytics_database_url' names no database: add it, e.g. "
            "postgresql://db2:5432/swiftmail")
    params = {**options, **{k: v for k, v in parsed.items() if k not in ("user", "password")},
              "user": settings.db_app_role, "application_name": "swiftmail-analytics"}
    if settings.db_app_password:
        params["password"] = settings.db_app_password
    return make_dsn(**params)
