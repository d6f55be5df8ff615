"""Settings: precedence, coercion, redaction, and errors that name the fix."""

from __future__ import annotations

import pytest

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import REDACTED, load_settings, redact_url


def test_precedence_flag_over_env_over_file_over_default(tmp_path) -> None:
    config = tmp_path / "swiftmail.toml"
    config.write_text('log_level = "warning"\npublic_url = "https://file.example"\n'
                      'db_pool_size = 3\n')
    environ = {"SWIFTMAIL_CONFIG": str(config), "SWIFTMAIL_PUBLIC_URL": "https://env.example"}
    settings = load_settings(environ=environ, overrides={"log_level": "debug"})
    assert settings.log_level == "debug"  # flag
    assert settings.public_url == "https://env.example"  # environment
    assert settings.db_pool_size == 3  # file
    assert settings.db_app_role == "swiftmail_app"  # default
    assert settings.config_file == config


def test_conventional_environment_names(tmp_path) -> None:
    settings = load_settings(environ={
        "SWIFTMAIL_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://db/swiftmail",
        "REDIS_URL": "redis://cache:6379/1",
        "SWIFTMAIL_DISABLED_PLUGINS": "a, b",
    })
    assert settings.database_url == "postgresql://db/swiftmail"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.disabled_plugins == ("a", "b")
    assert settings.storage_dir == tmp_path / "storage"
    assert settings.config_file == tmp_path / "swiftmail.toml"
    assert not settings.uses_embedded_postgres and not settings.uses_embedded_redis


def test_invalid_values_name_the_setting_and_source(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match=r"'db_pool_size' from \$SWIFTMAIL_DB_POOL_SIZE"):
        load_settings(environ={"SWIFTMAIL_DB_POOL_SIZE": "many", "SWIFTMAIL_DATA_DIR": str(tmp_path)})
    config = tmp_path / "swiftmail.toml"
    config.write_text("secret_kee = 'x'\n")
    with pytest.raises(ConfigurationError, match="unknown setting 'secret_kee'"):
        load_settings(environ={"SWIFTMAIL_CONFIG": str(config)})
    config.write_text("this is not toml")
    with pytest.raises(ConfigurationError, match="cannot read settings file"):
        load_settings(environ={"SWIFTMAIL_CONFIG": str(config)})


def test_require_names_the_setting_and_the_fix(tmp_path) -> None:
    settings = load_settings(environ={"SWIFTMAIL_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="'secret_key' is not set: run `swiftmail init` "
                                                 "or set SWIFTMAIL_SECRET_KEY"):
        settings.require("secret_key")


def test_redaction_hides_secrets_and_url_passwords(tmp_path) -> None:
    settings = load_settings(environ={
        "SWIFTMAIL_DATA_DIR": str(tmp_path),
        "SWIFTMAIL_SECRET_KEY": "s" * 40,
        "DATABASE_URL": "postgresql://app:hunter2@db:5432/swiftmail",
    })
    shown = settings.redacted()
    assert shown["secret_key"] == REDACTED
    assert shown["database_url"] == f"postgresql://app:{REDACTED}@db:5432/swiftmail"
    assert "hunter2" not in str(shown)
    assert redact_url("host=db password=hunter2 dbname=x") == f"host=db password={REDACTED} dbname=x"


def test_plugin_settings_from_file_and_environment(tmp_path, monkeypatch) -> None:
    config = tmp_path / "swiftmail.toml"
    config.write_text('[plugins.sendgrid]\napi_key = "file-key"\nbase_url = "http://127.0.0.1:1"\n')
    monkeypatch.setenv("SWIFTMAIL_PLUGIN_SENDGRID_API_KEY", "env-key")
    settings = load_settings(environ={"SWIFTMAIL_CONFIG": str(config)})
    assert settings.plugin_settings("sendgrid") == {"api_key": "env-key",
                                                    "base_url": "http://127.0.0.1:1"}


def test_plugin_settings_leave_a_longer_named_plugins_variables_alone(monkeypatch) -> None:
    # Regression: SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE was read by the relay as
    # 'transport_mode', and the relay then refused to start (unknown setting).
    monkeypatch.setenv("SWIFTMAIL_PLUGIN_RELAY_TRANSPORT_MODE", "smtp")
    monkeypatch.setenv("SWIFTMAIL_PLUGIN_RELAY_WARMUP", "false")
    settings = load_settings(environ={})
    assert settings.plugin_settings("relay") == {"warmup": "false"}
    assert settings.plugin_settings("relay_transport") == {"mode": "smtp"}


def test_config_show_hides_plugin_secrets(tmp_path) -> None:
    # Regression: SendGrid and Mailgun keys, signing keys and SMTP passwords were shown.
    config = tmp_path / "swiftmail.toml"
    config.write_text(
        '[plugins.sendgrid]\napi_key = "SG.very-secret"\nbase_url = "http://127.0.0.1:1"\n'
        '[plugins.mailgun]\napi_key = "key-123"\nwebhook_signing_key = "sign-456"\n'
        '[plugins.smtp_transport]\nhost = "smtp.example.com"\npassword = "hunter2"\n'
        'url = "smtp://user:pw@smtp.example.com"\n')
    shown = load_settings(environ={"SWIFTMAIL_CONFIG": str(config)}).redacted()["plugins"]
    text = str(shown)
    for secret in ("SG.very-secret", "key-123", "sign-456", "hunter2", ":pw@"):
        assert secret not in text
    assert shown["sendgrid"]["base_url"] == "http://127.0.0.1:1"
    assert shown["smtp_transport"]["host"] == "smtp.example.com"


def test_system_settings_file_is_found_without_swiftmail_config(tmp_path, monkeypatch) -> None:
    # Regression: `sudo swiftmail tenant list` on a production host ignored
    # /etc/swiftmail/swiftmail.toml and started an embedded PostgreSQL in root's home.
    from swiftmail_core import settings as settings_module

    system = tmp_path / "etc" / "swiftmail.toml"
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", system)
    monkeypatch.setattr(settings_module, "default_data_dir", lambda: tmp_path / "home")
    assert settings_module.config_path(environ={}) == tmp_path / "home" / "swiftmail.toml"

    system.parent.mkdir()
    system.write_text('database_url = "postgresql://db.internal:5432/swiftmail"\n')
    loaded = load_settings(environ={})
    assert loaded.config_file == system
    assert loaded.database_url == "postgresql://db.internal:5432/swiftmail"
    # An explicit file, SWIFTMAIL_CONFIG or a data directory still win.
    other = tmp_path / "other.toml"
    assert settings_module.config_path(other, environ={}) == other
    assert settings_module.config_path(environ={"SWIFTMAIL_CONFIG": str(other)}) == other
    assert settings_module.config_path(environ={"SWIFTMAIL_DATA_DIR": str(tmp_path / "d")}) \
        == tmp_path / "d" / "swiftmail.toml"
    assert settings_module.config_path(environ={}, data_dir=tmp_path / "e") \
        == tmp_path / "e" / "swiftmail.toml"
