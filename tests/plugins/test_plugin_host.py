"""The plugin host: loading, filtering, validation, typed hook calls."""

from __future__ import annotations

import pytest

from swiftmail_core.errors import ConfigurationError, PluginError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.plugins import PluginManager
from swiftmail_core.principal import Credentials
from swiftmail_core.settings import load_settings
from swiftmail_core.transports import Outcome, SendResult

BUILTINS = {"apikey_auth", "local_storage", "log_tracking"}


class Misspelled:
    @hookimpl
    def swiftmail_register_transport(self, settings):  # type: ignore[no-untyped-def]
        return []


class Memory:
    name = "memory"

    def send(self, messages):  # type: ignore[no-untyped-def]
        return [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in messages]

    def close(self) -> None:
        pass


class MemoryPlugin:
    @hookimpl
    def swiftmail_register_transports(self, settings):  # type: ignore[no-untyped-def]
        return [Memory()]


def test_builtins_load_through_entry_points() -> None:
    names = {info.name for info in PluginManager.load(load_settings(environ={})).plugin_info()}
    assert names >= BUILTINS


def test_load_and_disable_filters() -> None:
    only = PluginManager.load(load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "local_storage"}))
    assert {info.name for info in only.plugin_info()} == {"local_storage"}
    without = PluginManager.load(
        load_settings(environ={"SWIFTMAIL_DISABLED_PLUGINS": "log_tracking,apikey_auth"})
    )
    names = {info.name for info in without.plugin_info()}
    assert "log_tracking" not in names and "apikey_auth" not in names


def test_misspelled_hook_fails_at_start() -> None:
    with pytest.raises(PluginError, match="swiftmail_register_transport"):
        PluginManager.load(load_settings(environ={}), extra=[Misspelled()])


def test_duplicate_transport_names_are_refused() -> None:
    manager = PluginManager.load(
        load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none"}), extra=[MemoryPlugin()]
    )
    assert set(manager.transports()) == {"memory"}
    manager.register(MemoryPlugin(), "again")
    with pytest.raises(PluginError, match="two plugins register a transport named 'memory'"):
        manager.transports()


def test_unknown_transport_names_the_installed_ones() -> None:
    manager = PluginManager.load(
        load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none"}), extra=[MemoryPlugin()]
    )
    with pytest.raises(ConfigurationError, match="installed are memory"):
        manager.transport("carrier-pigeon")


def test_storage_falls_back_to_local_and_yields_to_others(tmp_path) -> None:
    settings = load_settings(environ={"SWIFTMAIL_STORAGE_DIR": str(tmp_path)})
    manager = PluginManager.load(settings)
    storage = manager.storage()
    assert storage.name == "local"
    with storage.open_write("t1/file.csv") as handle:
        handle.write(b"a,b\n")
    assert storage.open_read("t1/file.csv").read() == b"a,b\n"

    class Elsewhere:
        name = "elsewhere"

    class ElsewherePlugin:
        @hookimpl
        def swiftmail_storage(self, settings):  # type: ignore[no-untyped-def]
            return Elsewhere()

    manager.register(ElsewherePlugin(), "elsewhere")
    assert manager.storage().name == "elsewhere"
    with pytest.raises(Exception, match="not a valid storage key"):
        storage.open_write("../escape")


def test_no_storage_plugin_is_a_configuration_error() -> None:
    manager = PluginManager.load(load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none"}))
    with pytest.raises(ConfigurationError, match="no storage plugin"):
        manager.storage()


def test_authenticate_ignores_unknown_schemes(plugin_manager) -> None:
    assert plugin_manager.authenticate(Credentials(authorization="Basic abc")) is None


def _event(kind: str = "opened"):  # type: ignore[no-untyped-def]
    import datetime
    import uuid

    from swiftmail_core.tracking import TrackingEvent

    return TrackingEvent(uuid.uuid4(), kind, datetime.datetime.now(datetime.UTC))


def test_tracking_event_fans_out_through_pluggy() -> None:
    # Regression: a hand-written loop called each function with event= only, so a
    # wrapper never wrapped (its generator was dropped) and a sink taking settings failed.
    calls: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            calls.append(f"wrapper before {event.type}")
            result = yield
            calls.append("wrapper after")
            return result

    class EventOnly:
        @hookimpl
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            calls.append(f"event-only {event.type}")

    class WithSettings:
        @hookimpl(tryfirst=True)
        def swiftmail_tracking_event(self, settings, event):  # type: ignore[no-untyped-def]
            calls.append(f"with-settings {event.type} {settings.log_level}")

    settings = load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none",
                                      "SWIFTMAIL_LOG_LEVEL": "warning"})
    manager = PluginManager.load(settings, extra=[WithSettings(), EventOnly(), Wrapper()])
    manager.tracking_event(_event())
    assert calls == ["wrapper before opened", "with-settings opened warning",
                     "event-only opened", "wrapper after"]


def test_old_style_hookwrapper_sees_the_outcome() -> None:
    seen = []

    class OldWrapper:
        @hookimpl(hookwrapper=True)
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            outcome = yield
            seen.append((event.type, outcome.exception))

    manager = PluginManager.load(load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none"}),
                                 extra=[OldWrapper()])
    manager.tracking_event(_event("clicked"))
    assert seen == [("clicked", None)]


def test_failing_tracking_sink_is_logged_by_name_and_never_raises(caplog) -> None:
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def swiftmail_tracking_event(self):  # type: ignore[no-untyped-def]
            try:
                return (yield)
            except RuntimeError as ex:
                seen.append(str(ex))
                raise

    class Broken:
        @hookimpl
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            raise RuntimeError("sink down")

    class Earlier:
        @hookimpl(tryfirst=True)
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            seen.append(event.type)

    manager = PluginManager.load(load_settings(environ={"SWIFTMAIL_LOAD_PLUGINS": "none"}))
    manager.register(Wrapper(), "wrapper")
    manager.register(Broken(), "broken")
    manager.register(Earlier(), "earlier")
    with caplog.at_level("ERROR", logger="swiftmail_core.plugins"):
        manager.tracking_event(_event())  # the stored event stands: nothing raises
    assert seen == ["opened", "sink down"]
    assert "tracking plugin broken failed on a opened event" in caplog.text


def test_plugins_declare_secret_settings_for_config_show(tmp_path) -> None:
    # Regression: only names that looked secret were hidden; a plugin could not say
    # that its "dsn" or "auth" setting is one.
    class Declares:
        @hookimpl
        def swiftmail_secret_settings(self):  # type: ignore[no-untyped-def]
            return {"hello": ["dsn"], "mailgun": ["domain"]}

    config = tmp_path / "swiftmail.toml"
    config.write_text('[plugins.hello]\ndsn = "hello://abc@x"\ngreeting = "hi"\n'
                      '[plugins.mailgun]\napi_key = "key-1"\ndomain = "mg.example.com"\n')
    settings = load_settings(environ={"SWIFTMAIL_CONFIG": str(config)})
    manager = PluginManager.load(settings, extra=[Declares()])
    declared = manager.secret_settings()
    assert declared["mailgun"] >= {"api_key", "webhook_signing_key", "domain"}
    assert declared["smtp"] == {"password"}
    shown = settings.redacted(declared)["plugins"]
    assert shown["hello"] == {"dsn": "********", "greeting": "hi"}
    assert shown["mailgun"] == {"api_key": "********", "domain": "********"}
