"""The role's database step against the real `swiftmail` CLI and test database.

The role templates every secret into swiftmail.toml and then runs
`swiftmail init --yes` as a user that cannot write /etc/swiftmail. On a fresh
database of its own, this checks that init, run on the file the template
renders, creates the database and reports a change, then reports none when run
again; that `swiftmail migrate` reports none; and that neither writes to the
file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import psycopg2
import pytest
from psycopg2 import sql

from swiftmail_core.db.targets import DatabaseTargets
from swiftmail_core.testing.services import TEST_PASSWORD, TEST_ROLES
from tests.cli_helpers import run_swiftmail
from tests.contrib import role_files
from tests.contrib.role_files import ROLE_DIR, render


@pytest.fixture
def fresh_database_url(
    targets: DatabaseTargets, test_environ: dict[str, str], run_id: str
) -> Iterator[str]:
    """Name a database that does not exist yet; drop it afterwards."""
    name = f"swiftmail_test_{run_id}_role"
    params = psycopg2.extensions.parse_dsn(test_environ["DATABASE_URL"])
    yield psycopg2.extensions.make_dsn(**{**params, "dbname": name})
    admin = psycopg2.connect(targets.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture
def role_settings_file(
    tmp_path: Path, fresh_database_url: str, test_environ: dict[str, str]
) -> Path:
    """Render swiftmail.toml from role variables naming a fresh database."""
    variables: dict[str, Any] = {
        "swiftmail_data_dir": str(tmp_path / "data"),
        "swiftmail_spool_dir": str(tmp_path / "spool"),
        "swiftmail_database_url": fresh_database_url,
        "swiftmail_database_admin_url": test_environ["SWIFTMAIL_DATABASE_ADMIN_URL"],
        "swiftmail_redis_url": test_environ["REDIS_URL"],
        "swiftmail_secret_key": test_environ["SWIFTMAIL_SECRET_KEY"],
        "swiftmail_db_owner_role": TEST_ROLES["db_owner_role"],
        "swiftmail_db_app_role": TEST_ROLES["db_app_role"],
        "swiftmail_db_system_role": TEST_ROLES["db_system_role"],
        "swiftmail_db_owner_password": TEST_PASSWORD,
        "swiftmail_db_app_password": TEST_PASSWORD,
        "swiftmail_db_system_password": TEST_PASSWORD,
        "ansible_facts": {"processor_vcpus": 1},
    }
    (tmp_path / "data").mkdir()
    path = tmp_path / "swiftmail.toml"
    path.write_text(render("swiftmail.toml.j2", variables))
    path.chmod(0o600)
    return path


def changed_when(task_name: str, result_variable: str, stdout: str) -> bool:
    """Evaluate a database.yml task's changed_when on ``stdout``."""
    (task,) = [
        task for task in role_files.tasks(ROLE_DIR / "tasks" / "database.yml")
        if task["name"] == task_name
    ]
    environment = jinja2.Environment()  # noqa: S701 (an expression, not HTML)
    expression = environment.compile_expression(task["changed_when"].strip())
    return bool(expression({result_variable: {"stdout": stdout}}))


def test_init_then_rerun_and_migrate_on_the_rendered_file(role_settings_file: Path) -> None:
    before = role_settings_file.read_bytes()
    environ = {"SWIFTMAIL_CONFIG": str(role_settings_file)}

    shown = run_swiftmail("config", "show", env=environ)
    assert shown.returncode == 0, shown.stderr

    first = run_swiftmail("init", "--yes", env=environ)
    assert first.returncode == 0, first.stderr
    assert "created database" in first.stdout
    assert changed_when("Run swiftmail init", "swiftmail_init_result", first.stdout)

    again = run_swiftmail("init", "--yes", env=environ)
    assert again.returncode == 0, again.stderr
    assert not changed_when("Run swiftmail init", "swiftmail_init_result", again.stdout), \
        again.stdout

    migrate = run_swiftmail("migrate", env=environ)
    assert migrate.returncode == 0, migrate.stderr
    assert not changed_when(
        "Run swiftmail migrate after an upgrade", "swiftmail_migrate_result", migrate.stdout)

    assert "wrote" not in first.stdout + again.stdout
    assert role_settings_file.read_bytes() == before
    assert not role_settings_file.with_suffix(".tmp").exists()


def test_pg_monitor_is_granted_once_to_the_system_role(
    tmp_path: Path, fresh_database_url: str, test_environ: dict[str, str], run_id: str,
    targets: DatabaseTargets,
) -> None:
    """The role's pg_monitor task, run as written, on roles of this test's own."""
    import os
    import subprocess
    import sys

    names = {f"swiftmail_db_{kind}_role": f"swiftmail_test_{run_id}_rl_{kind}"
             for kind in ("owner", "app", "system")}
    variables: dict[str, Any] = {
        "swiftmail_data_dir": str(tmp_path / "data"),
        "swiftmail_database_url": fresh_database_url,
        "swiftmail_database_admin_url": test_environ["SWIFTMAIL_DATABASE_ADMIN_URL"],
        "swiftmail_redis_url": test_environ["REDIS_URL"],
        "swiftmail_secret_key": test_environ["SWIFTMAIL_SECRET_KEY"],
        "swiftmail_db_owner_password": TEST_PASSWORD,
        "swiftmail_db_app_password": TEST_PASSWORD,
        "swiftmail_db_system_password": TEST_PASSWORD,
        "ansible_facts": {"processor_vcpus": 1},
        **names,
    }
    (tmp_path / "data").mkdir()
    settings = tmp_path / "swiftmail.toml"
    settings.write_text(render("swiftmail.toml.j2", variables))
    environ = {"SWIFTMAIL_CONFIG": str(settings)}
    (task,) = [t for t in role_files.tasks(ROLE_DIR / "tasks" / "database.yml")
               if t["name"] == "Let the system role read replication state (pg_monitor)"]
    code = task["ansible.builtin.command"]["argv"][2]
    try:
        created = run_swiftmail("init", "--yes", env=environ)
        assert created.returncode == 0, created.stderr
        outputs = []
        for _ in range(2):
            ran = subprocess.run([sys.executable, "-c", code], env={**os.environ, **environ},
                                 capture_output=True, text=True, timeout=60, check=False)
            assert ran.returncode == 0, ran.stderr
            outputs.append(ran.stdout)
        assert [changed_when(task["name"], "swiftmail_pg_monitor_result", out)
                for out in outputs] == [True, False], outputs
    finally:
        admin = psycopg2.connect(targets.admin_dsn)
        admin.autocommit = True
        name = psycopg2.extensions.parse_dsn(fresh_database_url)["dbname"]
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s", (name,))
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            for role in names.values():
                cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()
