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


def test_failing_tracking_sink_does_not_stop_others(plugin_manager, tenant_a) -> None:
    import datetime

    from swiftmail_core.tracking import TrackingEvent

    got = []

    class Broken:
        @hookimpl
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            raise RuntimeError("sink down")

    class Working:
        @hookimpl
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            got.append(event.type)

    plugin_manager.register(Working(), "working")
    plugin_manager.register(Broken(), "broken")
    plugin_manager.tracking_event(
        TrackingEvent(tenant_a.id, "opened", datetime.datetime.now(datetime.UTC))
    )
    assert got == ["opened"]
