"""`swiftmail init`: write settings, create roles and database, migrate.

Idempotent: existing settings are kept, missing secrets are generated once,
roles and the database are created only when absent, and migrations that
already ran are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from swiftmail_core.db.bootstrap import bootstrap
from swiftmail_core.db.migrate import migrate
from swiftmail_core.db.targets import database_targets
from swiftmail_core.settings import Settings, load_settings, read_config_file

GENERATED_SECRETS = ("secret_key", "db_owner_password", "db_app_password", "db_system_password")
# APPSEC: the superuser DSN is used, never persisted.
PERSISTED_FLAGS = ("data_dir", "database_url", "redis_url", "citus", "citus_workers")


@dataclasses.dataclass
class InitReport:
    """What `init` did, for the CLI to print."""

    config_file: Path
    settings: Settings
    written_keys: list[str]
    database_actions: list[str]
    migrations: list[str]


def write_settings_file(path: Path, updates: Mapping[str, Any]) -> list[str]:
    """Merge ``updates`` into the TOML file (mode 0600); return keys written."""
    current = read_config_file(path)
    changed = [key for key, value in updates.items() if current.get(key) != value]
    if not changed:
        return []
    current.update(updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump({k: str(v) if isinstance(v, Path) else v for k, v in current.items()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return changed


def initialise(config: str | None, overrides: Mapping[str, Any]) -> InitReport:
    """Write missing settings, then create roles, the database and the schema."""
    settings = load_settings(config, overrides)
    assert settings.config_file is not None
    updates: dict[str, Any] = {
        key: overrides[key] for key in PERSISTED_FLAGS if overrides.get(key)
    }
    for key in GENERATED_SECRETS:
        if not getattr(settings, key):
            updates[key] = secrets.token_urlsafe(48 if key == "secret_key" else 24)
    written = write_settings_file(settings.config_file, updates)
    settings = load_settings(config, overrides)
    targets = database_targets(settings)
    actions = bootstrap(
        targets,
        {
            "owner": settings.db_owner_password,
            "app": settings.db_app_password,
            "system": settings.db_system_password,
        },
    )
    applied = migrate(targets)
    if settings.citus:
        from swiftmail_core.db.citus import setup_cluster

        actions += setup_cluster(targets, settings.citus_workers, {
            "owner": settings.db_owner_password,
            "app": settings.db_app_password,
            "system": settings.db_system_password,
        })
    return InitReport(settings.config_file or Path(), settings, written, actions, applied)
