"""The `swiftmail` CLI end to end, as a subprocess against real PostgreSQL."""

from __future__ import annotations

import json
import re

from tests.cli_helpers import run_swiftmail


def test_version_and_help() -> None:
    result = run_swiftmail("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("swiftmail, version ")
    assert "Examples:" in run_swiftmail("--help").stdout


def test_usage_error_exits_2() -> None:
    result = run_swiftmail("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_init_and_migrate_are_idempotent(test_environ, targets) -> None:
    first = run_swiftmail("init", "--yes", env=test_environ)
    assert first.returncode == 0, first.stderr
    assert "migrations applied: none (up to date)" in first.stdout
    again = run_swiftmail("migrate", env=test_environ)
    assert again.returncode == 0, again.stderr
    assert "none (up to date)" in again.stdout


def test_tenant_user_and_apikey_lifecycle(test_environ, runtime, run_id) -> None:
    slug = f"cli-{run_id}"
    created = run_swiftmail("tenant", "create", slug, "--name", "CLI Tenant", env=test_environ)
    assert created.returncode == 0, created.stderr
    duplicate = run_swiftmail("tenant", "create", slug, env=test_environ)
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == f"error: a tenant with slug '{slug}' already exists"
    assert slug in run_swiftmail("tenant", "list", env=test_environ).stdout

    user = run_swiftmail(
        "user", "create", f"ada-{run_id}@example.com", "--tenant", slug, "--role", "owner",
        env={**test_environ, "SWIFTMAIL_USER_PASSWORD": "correct horse battery"},
    )
    assert user.returncode == 0, user.stderr
    listed = run_swiftmail("user", "list", "--tenant", slug, env=test_environ).stdout
    assert f"ada-{run_id}@example.com" in listed and "owner" in listed
    weak = run_swiftmail("user", "create", f"bob-{run_id}@example.com", "--password", "short",
                         env=test_environ)
    assert weak.returncode == 1
    assert "password: must be at least 12 characters" in weak.stderr

    key = run_swiftmail("apikey", "create", "--tenant", slug, "--role", "viewer", env=test_environ)
    assert key.returncode == 0, key.stderr
    secret = re.search(r"sm_live_\w+", key.stdout)
    assert secret is not None
    key_id = re.search(r"created key ([0-9a-f-]{36})", key.stdout)[1]
    listing = run_swiftmail("apikey", "list", "--tenant", slug, env=test_environ).stdout
    assert key_id in listing and secret[0] not in listing
    assert run_swiftmail("apikey", "revoke", "--tenant", slug, key_id, env=test_environ).returncode == 0
    assert "revoked" in run_swiftmail("apikey", "list", "--tenant", slug, env=test_environ).stdout

    assert run_swiftmail("tenant", "suspend", slug, env=test_environ).returncode == 0
    assert "suspended" in run_swiftmail("tenant", "list", env=test_environ).stdout
    assert run_swiftmail("tenant", "resume", slug, env=test_environ).returncode == 0
    deleted = run_swiftmail("tenant", "delete", slug, "--yes", env=test_environ)
    assert deleted.returncode == 0, deleted.stderr
    assert slug not in run_swiftmail("tenant", "list", env=test_environ).stdout


def test_errors_are_one_line_without_traceback(test_environ, runtime) -> None:
    result = run_swiftmail("tenant", "create", "Not A Slug", env=test_environ)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: slug:")
    missing = run_swiftmail("apikey", "list", "--tenant", "nobody-here", env=test_environ)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: no tenant 'nobody-here'")


def test_bad_setting_names_the_setting(test_environ, tmp_path) -> None:
    result = run_swiftmail("config", "show", env={**test_environ, "SWIFTMAIL_DB_POOL_SIZE": "lots"})
    assert result.returncode == 1
    assert "db_pool_size" in result.stderr and "SWIFTMAIL_DB_POOL_SIZE" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text('databse_url = "postgresql://x/y"\n')
    typo = run_swiftmail("--config", str(config), "config", "show", env=test_environ)
    assert typo.returncode == 1
    assert "unknown setting 'databse_url'" in typo.stderr


def test_config_show_redacts_secrets(test_environ) -> None:
    result = run_swiftmail("config", "show", env=test_environ)
    assert result.returncode == 0, result.stderr
    assert test_environ["SWIFTMAIL_SECRET_KEY"] not in result.stdout
    assert "secret_key = \"********\"" in result.stdout
    assert "db_app_role = \"swiftmail_test_app\"" in result.stdout


def test_doctor_passes_on_the_test_install(test_environ, targets) -> None:
    result = run_swiftmail("doctor", env=test_environ)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "tenant_isolation" not in result.stdout  # checks are named in words
    assert "contacts has ENABLE and FORCE row level security" in result.stdout
    # the test install's loopback public_url cannot give real DNS records: a warning
    assert "WARN sending-domain DNS targets (public_url is http://127.0.0.1:8000" in result.stdout


def test_doctor_without_outside_dns_warns_instead_of_failing(test_environ, targets) -> None:
    # Regression: on an app host with no outside DNS, doctor failed the whole play.
    import socket
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers: the resolver times out
        environ = {**test_environ, "SWIFTMAIL_DNS_NAMESERVERS": "127.0.0.1",
                   "SWIFTMAIL_DNS_PORT": str(silent.getsockname()[1])}
        # Both at once: each waits out the resolver's 5 s lifetime.
        with ThreadPoolExecutor(2) as pool:
            strict_run = pool.submit(run_swiftmail, "doctor", env=environ)
            lenient_run = pool.submit(run_swiftmail, "doctor", "--no-outside-dns", env=environ)
            strict, lenient = strict_run.result(), lenient_run.result()
    assert strict.returncode == 1
    assert "FAIL DNS resolver answers" in strict.stdout
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "WARN DNS resolver answers" in lenient.stdout
    assert "only a relay needs outside DNS" in lenient.stdout


def test_plugins_command_lists_builtins(test_environ) -> None:
    result = run_swiftmail("plugins", env=test_environ)
    assert result.returncode == 0, result.stderr
    assert "apikey_auth" in result.stdout and "swiftmail_authenticate" in result.stdout
    only = run_swiftmail("plugins", env={**test_environ, "SWIFTMAIL_LOAD_PLUGINS": "local_storage"})
    assert only.stdout.strip().startswith("local_storage")
    assert "apikey_auth" not in only.stdout


def test_the_next_step_names_a_swiftmail_the_user_can_run(monkeypatch, tmp_path) -> None:
    # Regression: the demo said `swiftmail serve` while swiftmail was only in .venv/bin.
    from swiftmail_core.cli.demo_commands import invoked_command

    script = tmp_path / ".venv" / "bin" / "swiftmail"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invoked_command() == ".venv/bin/swiftmail"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert invoked_command() == "swiftmail"


def test_a_demo_rerun_leaves_one_live_demo_key(runtime, make_tenant) -> None:  # type: ignore[no-untyped-def]
    # Regression: each `make demo` minted another owner key and left the old ones live.
    from swiftmail_core import apikeys
    from swiftmail_core.cli.demo_commands import DEMO_KEY_NAME, _revoke_demo_keys

    tenant = make_tenant("demo")
    apikeys.create_api_key(tenant.id, role="owner", name=DEMO_KEY_NAME)
    apikeys.create_api_key(tenant.id, role="owner", name=DEMO_KEY_NAME)
    kept = apikeys.create_api_key(tenant.id, role="admin", name="ci")
    assert _revoke_demo_keys(tenant.id) == 2
    live = [k.id for k in apikeys.list_api_keys(tenant.id) if k.revoked_at is None]
    assert live == [kept.id]


def test_ids_that_are_not_uuids_are_usage_errors(test_environ, runtime, run_id) -> None:  # type: ignore[no-untyped-def]
    # Regression: `apikey revoke` and `send status` printed the raw SQL and the value.
    slug = f"ids-{run_id}"
    assert run_swiftmail("tenant", "create", slug, env=test_environ).returncode == 0
    for args in (("apikey", "revoke", "--tenant", slug, "not-a-uuid"),
                 ("send", "status", slug, "not-a-uuid"),
                 ("send", "pause", slug, "not-a-uuid"),
                 ("import", "report", "not-a-uuid", "--tenant", slug)):
        result = run_swiftmail(*args, env=test_environ)
        assert result.returncode == 2, (args, result.stderr)
        assert "'not-a-uuid' is not a UUID" in result.stderr
        assert "SELECT" not in result.stderr and "LINE" not in result.stderr


def test_a_scope_on_an_unknown_resource_is_refused(test_environ, runtime, run_id) -> None:  # type: ignore[no-untyped-def]
    # Regression: --scope contact:read made a key that could do nothing.
    slug = f"scope-{run_id}"
    assert run_swiftmail("tenant", "create", slug, env=test_environ).returncode == 0
    result = run_swiftmail("apikey", "create", "--tenant", slug, "--scope", "contact:read",
                           env=test_environ)
    assert result.returncode == 1
    assert "did you mean contacts?" in result.stderr
    good = run_swiftmail("apikey", "create", "--tenant", slug, "--scope", "contacts:read",
                         env=test_environ)
    assert good.returncode == 0, good.stderr


def test_users_can_join_another_tenant_change_role_leave_and_be_deleted(
        test_environ, runtime, run_id) -> None:  # type: ignore[no-untyped-def]
    # Regression: a user could be created once, with one tenant and role, and never changed.
    one, two, email = f"u1-{run_id}", f"u2-{run_id}", f"eve-{run_id}@example.com"
    for slug in (one, two):
        assert run_swiftmail("tenant", "create", slug, env=test_environ).returncode == 0
    made = run_swiftmail("user", "create", email, "--tenant", one, "--role", "viewer",
                         env={**test_environ, "SWIFTMAIL_USER_PASSWORD": "correct horse battery"})
    assert made.returncode == 0, made.stderr

    def roles(slug: str) -> str:
        return run_swiftmail("user", "list", "--tenant", slug, env=test_environ).stdout

    granted = run_swiftmail("user", "grant", email.upper(), "--tenant", two, "--role", "editor",
                            env=test_environ)
    assert granted.returncode == 0, granted.stderr
    assert "added to" in granted.stdout and "editor" in roles(two)
    promoted = run_swiftmail("user", "grant", email, "--tenant", one, "--role", "admin",
                             env=test_environ)
    assert "is now admin" in promoted.stdout and "admin" in roles(one)
    assert run_swiftmail("user", "revoke", email, "--tenant", two, env=test_environ).returncode == 0
    assert email not in roles(two) and email in roles(one)
    again = run_swiftmail("user", "revoke", email, "--tenant", two, env=test_environ)
    assert again.returncode == 1 and "is not a member" in again.stderr
    assert run_swiftmail("user", "delete", email, "--yes", env=test_environ).returncode == 0
    assert email not in roles(one)
    missing = run_swiftmail("user", "grant", email, "--tenant", one, "--role", "viewer",
                            env=test_environ)
    assert missing.returncode == 1 and "no user" in missing.stderr


def test_config_show_hides_what_plugins_declare_secret(test_environ, tmp_path) -> None:
    from tests.plugins.installed import install_plugin

    env = install_plugin(tmp_path / "site", "hello", """
        from swiftmail_core.hookspecs import hookimpl

        @hookimpl
        def swiftmail_secret_settings():
            return {"hello": ["dsn"]}
    """)
    config = tmp_path / "swiftmail.toml"
    config.write_text('[plugins.hello]\ndsn = "opaque-dsn-value"\ngreeting = "hi"\n'
                      '[plugins.smtp]\nhost = "smtp.example.com"\npassword = "hunter2"\n')
    result = run_swiftmail("config", "show", "--json",
                           env={**test_environ, **env, "SWIFTMAIL_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "opaque-dsn-value" not in result.stdout and "hunter2" not in result.stdout
    assert '"greeting": "hi"' in result.stdout and '"host": "smtp.example.com"' in result.stdout


def test_config_show_includes_plugin_settings_from_the_environment(test_environ) -> None:
    # Regression: SWIFTMAIL_PLUGIN_NAME_KEY values were in effect but missing from the output.
    env = {**test_environ, "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": "/var/spool/from-env",
           "SWIFTMAIL_PLUGIN_SENDGRID_API_KEY": "SG.env-secret-value"}
    result = run_swiftmail("config", "show", "--json", env=env)
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)["plugins"]
    assert plugins["relay"]["spool_dir"] == "/var/spool/from-env"
    assert "SG.env-secret-value" not in result.stdout and "api_key" in plugins["sendgrid"]
