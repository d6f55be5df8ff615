"""The settings object: defaults, a TOML file, the environment, CLI flags.

Precedence, highest first: a CLI flag, the environment, the TOML file, the
default. Every setting is overridable by ``SWIFTMAIL_<NAME>`` (a few also by a
conventional name such as ``DATABASE_URL``). ``swiftmail config show`` prints
the effective values with secrets redacted.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import platformdirs

from swiftmail_core.errors import ConfigurationError

REDACTED = "********"
#: Plugin setting names that hold secrets (API keys, signing keys, passwords, tokens).
SECRET_NAME = re.compile(r"(key|secret|password|passwd|token|credential|passphrase)",
                         re.IGNORECASE)


def redact_plugin_table(
    table: Mapping[str, Any], secret_names: Collection[str] = ()
) -> dict[str, Any]:
    """Return a plugin's settings with secrets hidden (URLs: the password).

    A value is hidden when its name is in ``secret_names`` (what the plugin
    declares through ``swiftmail_secret_settings``) or looks like a secret.
    """
    shown: dict[str, Any] = {}
    for key, value in table.items():
        declared = key in secret_names
        if isinstance(value, Mapping) and not declared:
            shown[key] = redact_plugin_table(value)
        elif (declared or SECRET_NAME.search(key)) and value not in (None, ""):
            shown[key] = REDACTED
        elif isinstance(value, str) and "://" in value:
            shown[key] = redact_url(value)
        else:
            shown[key] = value
    return shown


@functools.cache
def _installed_plugin_names() -> frozenset[str]:
    """Return the names of plugins installed through the ``swiftmail`` entry point group."""
    return frozenset(entry.name for entry in importlib.metadata.entry_points(group="swiftmail"))


def default_data_dir() -> Path:
    """Return the per-user data directory used when nothing is configured."""
    return Path(platformdirs.user_data_dir("swiftmail", appauthor=False))


def _setting(
    default: Any,
    help: str,
    *,
    secret: bool = False,
    env: tuple[str, ...] = (),
) -> Any:
    return dataclasses.field(
        default=default, metadata={"help": help, "secret": secret, "env": env}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every SwiftMail setting, typed, with its documented default."""

    data_dir: Path = _setting(
        None, "Where embedded engines, the spool and local storage live."
    )
    database_url: str | None = _setting(
        None,
        "PostgreSQL server and database (credentials in it are used by `init` only). "
        "Unset: the embedded PostgreSQL in data_dir.",
        env=("DATABASE_URL",),
    )
    analytics_database_url: str | None = _setting(
        None,
        "PostgreSQL streaming replica (hot standby) that campaign and tenant statistics "
        "read from, e.g. postgresql://db2:5432/swiftmail (credentials in it are ignored: "
        "the app role's are used). Its numbers lag the primary by the replica's replay lag "
        "(docs/availability.md). Unset, or unreachable: the primary.",
    )
    database_admin_url: str | None = _setting(
        None,
        "Superuser DSN `swiftmail init` uses to create roles and the database "
        "(default: database_url).",
        secret=True,
    )
    db_owner_role: str = _setting("swiftmail_owner", "Role that owns the schema and runs migrations.")
    db_owner_password: str | None = _setting(None, "Password of the owner role.", secret=True)
    db_app_role: str = _setting(
        "swiftmail_app", "Role the API and workers use: no ownership, no BYPASSRLS."
    )
    db_app_password: str | None = _setting(None, "Password of the app role.", secret=True)
    db_system_role: str = _setting(
        "swiftmail_system", "Narrow role for cross-tenant machinery (dispatch, bounces, auth)."
    )
    db_system_password: str | None = _setting(None, "Password of the system role.", secret=True)
    db_pool_size: int = _setting(10, "Connections per process and role.")
    db_connect_timeout_seconds: int = _setting(
        5,
        "Seconds to connect to one PostgreSQL host; a multi-host database_url "
        "(host=a,b with target_session_attrs=read-write) tries the next after this.",
    )
    db_dead_connection_seconds: int = _setting(
        10,
        "A PostgreSQL server that stops answering (host down, cable cut) is given up after "
        "about this long: TCP keepalives and tcp_user_timeout on every connection. Keep it "
        "below Patroni's ttl (30), so a pooled connection to a lost primary is known dead "
        "before a standby is promoted and no request after a failover waits on it.",
    )
    db_failover_wait_seconds: int = _setting(
        30,
        "After losing its connection, a transaction that is safe to repeat (claims, state "
        "writes) waits up to this long for a writable primary, then runs once more.",
    )
    citus: bool = _setting(
        False,
        "database_url is a Citus coordinator: `init` distributes every tenant table by "
        "tenant_id (docs/citus.md).",
    )
    citus_workers: tuple[str, ...] = _setting(
        (),
        "Comma-separated HOST:PORT of Citus workers `init --citus` registers "
        "(empty: take the workers the coordinator already has).",
    )
    redis_url: str | None = _setting(
        None, "Redis URL. Unset (and no redis_sentinels): the embedded Redis in data_dir.",
        env=("REDIS_URL",)
    )
    redis_sentinels: tuple[str, ...] = _setting(
        (),
        "Comma-separated HOST:PORT of Redis Sentinels. Set: every client finds the master of "
        "redis_sentinel_service through them and follows a failover (redis_url is not used).",
    )
    redis_sentinel_service: str = _setting(
        "swiftmail", "The master name the Sentinels monitor (`sentinel monitor NAME ...`)."
    )
    redis_sentinel_password: str | None = _setting(
        None, "Password of the Sentinels themselves (their requirepass).", secret=True
    )
    redis_password: str | None = _setting(
        None,
        "Password of the Redis master and replicas in Sentinel mode (a redis_url carries its own).",
        secret=True,
    )
    redis_db: int = _setting(
        0, "Redis database number in Sentinel mode (a redis_url carries its own)."
    )
    secret_key: str | None = _setting(
        None,
        "Key that encrypts secrets at rest and signs public tokens. `swiftmail init` makes one.",
        secret=True,
    )
    relay_platform_secret: str | None = _setting(
        None,
        "Comma-separated shared secrets workers sign their hand-offs to relays over the "
        "network with (the first signs, every one is accepted: rotate by prepending); every "
        "worker and relay host needs it. Unset: one derived from secret_key (docs/relay.md).",
        secret=True,
    )
    public_url: str = _setting(
        "http://127.0.0.1:8000", "Base URL of public pages and tracking links."
    )
    log_level: str = _setting("info", "debug, info, warning or error.")
    log_format: str = _setting("auto", "json, console, or auto (console on a TTY).")
    load_plugins: tuple[str, ...] | None = _setting(
        None, "Comma-separated plugin names: load only these (default: all installed)."
    )
    disabled_plugins: tuple[str, ...] = _setting((), "Comma-separated plugin names not to load.")
    storage_dir: Path | None = _setting(
        None, "Local storage root for imports and exports (default: data_dir/storage)."
    )
    dns_nameservers: tuple[str, ...] = _setting(
        (), "Comma-separated resolver addresses (default: the system resolver)."
    )
    dns_port: int = _setting(53, "Port of the DNS resolvers in dns_nameservers.")
    webhook_allow_loopback_http: bool = _setting(
        False,
        "Allow outgoing webhooks to http:// URLs on loopback (tests only; never in production).",
    )
    webhook_concurrency: int = _setting(
        8, "Webhook POSTs one deliverer makes at once (its thread pool)."
    )
    webhook_endpoint_concurrency: int = _setting(
        2, "Webhook POSTs in flight to one webhook at once, across all deliverers."
    )
    webhook_timeout_seconds: float = _setting(
        10.0, "How long one webhook POST may take (connect and answer)."
    )
    worker_queue_name: str = _setting(
        "swiftmail-sending", "Name of the sending queue in Redis (give each installation its own)."
    )
    worker_threads: int = _setting(2, "Threads per `swiftmail worker` process.")
    worker_tick_seconds: int = _setting(
        10, "How often workers start due campaigns, reclaim expired leases and re-kick work."
    )
    send_batch_size: int = _setting(100, "Ledger rows a worker claims and sends per batch.")
    send_lease_seconds: int = _setting(
        300, "How long a claimed batch is leased before the sweeper reclaims it."
    )
    send_retry_base_seconds: int = _setting(
        60, "First retry delay after a transient failure (doubles per attempt, at most 1 hour)."
    )
    send_max_attempts: int = _setting(10, "Attempts before a deferred message expires.")
    send_pause_after_failures: int = _setting(
        5, "Batches in a row a campaign's transport may fail before the campaign is paused "
        "with the reason (a transport that cannot be loaded pauses it at once)."
    )
    send_unknown_outcome_hours: float = _setting(
        72.0, "Hours a message whose send answer was lost (`unknown`) waits for the provider's "
        "events before it ends `expired` with that reason."
    )
    send_unknown_resend_hours: float = _setting(
        24.0, "Hours a message whose hand-off answer was lost is resent to the same receiver "
        "(only transports whose receiver drops repeats, e.g. the relay transport's network "
        "mode) before it stays `unknown`; 0 turns resending off."
    )
    plugins: Mapping[str, Any] = _setting(
        None, "Per-plugin settings tables, `[plugins.NAME]` in the file."
    )
    config_file: Path | None = _setting(None, "The TOML file these settings were read from.")

    def __post_init__(self) -> None:
        if self.data_dir is None:
            object.__setattr__(self, "data_dir", default_data_dir())
        if self.plugins is None:
            object.__setattr__(self, "plugins", {})
        if self.storage_dir is None:
            object.__setattr__(self, "storage_dir", Path(self.data_dir) / "storage")

    @property
    def uses_embedded_postgres(self) -> bool:
        """True when no database_url is configured."""
        return not self.database_url

    @property
    def uses_embedded_redis(self) -> bool:
        """True when neither redis_url nor redis_sentinels is configured."""
        return not self.redis_url and not self.redis_sentinels

    def require(self, name: str) -> Any:
        """Return a setting's value, or raise naming the setting and the fix."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigurationError(
                f"setting {name!r} is not set: run `swiftmail init` or set "
                f"{env_names(name)[0]}"
            )
        return value

    def plugin_settings(self, plugin: str) -> dict[str, Any]:
        """Return the ``[plugins.NAME]`` table, overlaid by SWIFTMAIL_PLUGIN_NAME_KEY."""
        values = dict(self.plugins.get(plugin, {}))
        prefix = f"SWIFTMAIL_PLUGIN_{plugin.upper()}_"
        # NOTE: SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE belongs to relay_transport, not relay.
        longer = tuple(f"SWIFTMAIL_PLUGIN_{name.upper()}_"
                       for name in {*_installed_plugin_names(), *self.plugins}
                       if name.startswith(f"{plugin}_"))
        for key, value in os.environ.items():
            if key.startswith(prefix) and not key.startswith(longer):
                values[key[len(prefix) :].lower()] = value
        return values

    def effective_plugin_tables(self) -> dict[str, dict[str, Any]]:
        """Return every non-empty plugin table as plugins see it (TOML overlaid by environment)."""
        names = sorted({*_installed_plugin_names(),
                        *(name for name, table in self.plugins.items() if isinstance(table, Mapping))})
        tables = {name: self.plugin_settings(name) for name in names}
        return {name: table for name, table in tables.items() if table}

    def redacted(
        self, secret_settings: Mapping[str, Collection[str]] | None = None
    ) -> dict[str, Any]:
        """Return the effective settings as plain values with secrets hidden.

        ``secret_settings`` names each plugin table's declared secrets (see
        ``PluginManager.secret_settings``); names that look secret are hidden anyway.
        """
        declared = secret_settings or {}
        shown: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["secret"] and value:
                value = REDACTED
            elif field.name.endswith("_url") and value:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif field.name == "plugins":
                value = {**{k: v for k, v in value.items() if not isinstance(v, Mapping)},
                         **{name: redact_plugin_table(table, declared.get(name, ()))
                            for name, table in self.effective_plugin_tables().items()}}
            shown[field.name] = value
        return shown


SETTING_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "config_file"}


def env_names(name: str) -> tuple[str, ...]:
    """Return the environment variables that set ``name``, preferred first."""
    field = SETTING_FIELDS[name]
    return (f"SWIFTMAIL_{name.upper()}", *field.metadata["env"])


def redact_url(url: str) -> str:
    """Hide the password in a URL or libpq key/value DSN."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if "@" in rest:
            credentials, host = rest.rsplit("@", 1)
            if ":" in credentials:
                user = credentials.split(":", 1)[0]
                return f"{scheme}://{user}:{REDACTED}@{host}"
        return url
    return " ".join(
        f"password={REDACTED}" if part.startswith("password=") else part for part in url.split()
    )


def _coerce(name: str, raw: Any, source: str) -> Any:
    field = SETTING_FIELDS[name]
    annotation = str(field.type)
    try:
        if raw is None:
            return None
        if name == "plugins":
            if not isinstance(raw, Mapping):
                raise TypeError("expected a table of tables")
            return {k: dict(v) for k, v in raw.items()}
        if "tuple" in annotation:
            if isinstance(raw, str):
                return tuple(part.strip() for part in raw.split(",") if part.strip())
            return tuple(str(part) for part in raw)
        if "Path" in annotation:
            return Path(str(raw)).expanduser()
        if annotation.startswith("int"):
            return int(raw)
        if annotation.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        return str(raw)
    except (TypeError, ValueError) as ex:
        raise ConfigurationError(
            f"setting {name!r} from {source} is invalid ({ex}): expected {annotation}"
        ) from ex


# The settings file of a system install (the Ansible role writes it): found
# without SWIFTMAIL_CONFIG, so `sudo swiftmail ...` on a production host uses
# the install's database instead of starting an embedded one in root's home.
SYSTEM_CONFIG = Path("/etc/swiftmail/swiftmail.toml")


def config_path(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the TOML file to read.

    In order: --config, SWIFTMAIL_CONFIG, data_dir's when a data directory is
    given (--data-dir, SWIFTMAIL_DATA_DIR), /etc/swiftmail/swiftmail.toml when
    it exists and this user can see it, else the per-user data directory's.
    """
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("SWIFTMAIL_CONFIG"):
        return Path(environ["SWIFTMAIL_CONFIG"]).expanduser()
    base = data_dir or environ.get("SWIFTMAIL_DATA_DIR")
    if not base and os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG
    base = base or default_data_dir()
    return Path(base).expanduser() / "swiftmail.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a settings file, refusing keys that are not settings."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as ex:
        raise ConfigurationError(f"cannot read settings file {path}: {ex}") from ex
    unknown = sorted(set(data) - set(SETTING_FIELDS))
    if unknown:
        raise ConfigurationError(
            f"unknown setting {unknown[0]!r} in {path}: see `swiftmail config show` for names"
        )
    return data


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings: flag > environment > file > default."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = config_path(config, environ, overrides.get("data_dir"))
    file_values = read_config_file(path)
    values: dict[str, Any] = {}
    for name in SETTING_FIELDS:
        if name in overrides:
            values[name] = _coerce(name, overrides[name], "the command line")
            continue
        for env_name in env_names(name):
            if env_name in environ and environ[env_name] != "":
                values[name] = _coerce(name, environ[env_name], f"${env_name}")
                break
        else:
            if name in file_values:
                values[name] = _coerce(name, file_values[name], str(path))
    values.setdefault("plugins", {})
    return Settings(config_file=path, **values)
