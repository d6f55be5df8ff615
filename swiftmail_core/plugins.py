"""The plugin host: loads plugins and offers one typed method per hook.

Plugins, built-in and third-party alike, are found through the ``swiftmail``
entry-point group. ``SWIFTMAIL_LOAD_PLUGINS=a,b`` loads only those;
``SWIFTMAIL_DISABLED_PLUGINS=a,b`` skips those. ``check_pending()`` makes a
misspelled hook implementation fail at start-up instead of never running.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Iterable
from email.message import EmailMessage
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from swiftmail_core import __version__, hookspecs
from swiftmail_core.errors import ConfigurationError, PluginError
from swiftmail_core.settings import Settings

if TYPE_CHECKING:
    import click
    import falcon

    from swiftmail_core.db.audit import Finding
    from swiftmail_core.principal import Credentials, Principal
    from swiftmail_core.storage import Storage
    from swiftmail_core.tracking import TrackingEvent
    from swiftmail_core.transports import Transport

ENTRY_POINT_GROUP = "swiftmail"
#: The distribution a plugin names in its requirements to say which hosts it supports.
HOST_DISTRIBUTION = "swiftmail"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What `swiftmail plugins` shows about one loaded plugin."""

    name: str
    version: str
    hooks: tuple[str, ...]
    module: str


class PluginManager:
    """A typed facade over pluggy's manager for SwiftMail's hooks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager("swiftmail")
        self.pm.add_hookspecs(hookspecs)
        self._versions: dict[str, str] = {}
        self._transports: dict[str, Transport] | None = None

    @classmethod
    def load(cls, settings: Settings, extra: Iterable[Any] = ()) -> PluginManager:
        """Create a manager with installed plugins (filtered by settings) and ``extra``."""
        manager = cls(settings)
        manager.load_entry_points()
        for plugin in extra:
            manager.register(plugin)
        manager.check()
        return manager

    def _wanted(self, name: str) -> bool:
        if self.settings.load_plugins is not None and name not in self.settings.load_plugins:
            return False
        return name not in self.settings.disabled_plugins

    def load_entry_points(self) -> None:
        """Register every wanted plugin of the ``swiftmail`` entry-point group.

        A plugin whose distribution requires another SwiftMail version, that
        fails to import or that cannot register raises ``PluginError``: one
        line naming the plugin and how to disable it.
        """
        checked: set[str] = {HOST_DISTRIBUTION}  # the built-ins ship with the host
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not self._wanted(entry_point.name) or self.pm.has_plugin(entry_point.name):
                continue
            # NOTE: each .metadata parses the METADATA file again: read it once.
            metadata = entry_point.dist.metadata if entry_point.dist is not None else None
            if metadata is not None and canonicalize_name(metadata["Name"]) not in checked:
                check_host_requirement(entry_point.name, metadata)
                checked.add(canonicalize_name(metadata["Name"]))
            try:
                plugin = entry_point.load()
            except Exception as ex:
                raise PluginError(
                    f"plugin {entry_point.name!r} failed to import "
                    f"({type(ex).__name__}: {_one_line(ex)}): fix or uninstall it, "
                    f"or add it to SWIFTMAIL_DISABLED_PLUGINS"
                ) from ex
            self.register(plugin, entry_point.name)
            if metadata is not None:
                self._versions[entry_point.name] = metadata["Version"]

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a module or object implementing hooks."""
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as ex:
            label = name or self.pm.get_canonical_name(plugin)
            raise PluginError(
                f"plugin {label!r} cannot register: {_one_line(ex)}: fix or uninstall it, "
                "or add it to SWIFTMAIL_DISABLED_PLUGINS"
            ) from ex
        self._transports = None

    def check(self) -> None:
        """Fail when a plugin implements a hook that does not exist (``check_pending``)."""
        for hook_name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, hook_name)
            if hook_name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} implements unknown hook {hook_name!r}: "
                        "hooks are named swiftmail_*, see docs/plugins.md for the list"
                    )

    def plugin_info(self) -> list[PluginInfo]:
        """Describe each registered plugin: name, version, hooks."""
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: str(item[0])):
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ()))
            module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__name__
            infos.append(PluginInfo(str(name), self._versions.get(str(name), ""), hooks, module))
        return infos

    # One typed method per hook -------------------------------------------------

    def startup(self, process: str) -> None:
        """Call ``swiftmail_startup`` on every plugin (``runtime.start`` does, once)."""
        self.pm.hook.swiftmail_startup(settings=self.settings, process=str(process))

    def transports(self) -> dict[str, Transport]:
        """Return every registered transport by name."""
        if self._transports is None:
            found: dict[str, Transport] = {}
            for batch in self.pm.hook.swiftmail_register_transports(settings=self.settings):
                for transport in batch or ():
                    if transport.name in found:
                        raise PluginError(
                            f"two plugins register a transport named {transport.name!r}: "
                            "disable one with SWIFTMAIL_DISABLED_PLUGINS"
                        )
                    found[transport.name] = transport
            self._transports = found
        return self._transports

    def close_transports(self) -> None:
        """Call ``close`` on every transport built so far (worker shutdown).

        A transport whose ``close`` raises is logged by name; the others
        are still closed. The next ``transports()`` call builds them anew.
        """
        transports, self._transports = self._transports or {}, None
        for name, transport in transports.items():
            try:
                transport.close()
            except Exception:
                log.exception("transport %s failed to close", name)

    def transport(self, name: str) -> Transport:
        """Return one transport by name, or raise naming the installed ones."""
        transports = self.transports()
        if name not in transports:
            raise ConfigurationError(
                f"no transport named {name!r}: installed are {', '.join(sorted(transports)) or 'none'}"
            )
        return transports[name]

    def authenticate(self, credentials: Credentials) -> Principal | None:
        """Resolve credentials to a principal through the auth plugins."""
        result: Principal | None = self.pm.hook.swiftmail_authenticate(
            credentials=credentials, settings=self.settings
        )
        return result

    def tracking_event(self, event: TrackingEvent) -> None:
        """Fan a stored event out to the tracking sinks; a failure is logged, never raised."""
        hook = self.pm.hook.swiftmail_tracking_event
        try:
            hook(event=event, settings=self.settings)
        except Exception as ex:
            log.exception("tracking plugin %s failed on a %s event",
                          _raising_plugin(ex, hook.get_hookimpls()), event.type)

    def secret_settings(self) -> dict[str, frozenset[str]]:
        """Return the secret setting names each plugin declares, by settings table."""
        merged: dict[str, set[str]] = {}
        for declared in self.pm.hook.swiftmail_secret_settings(settings=self.settings):
            for table, names in (declared or {}).items():
                merged.setdefault(table, set()).update(names)
        return {table: frozenset(names) for table, names in merged.items()}

    def storage(self) -> Storage:
        """Return the storage backend the plugins provide."""
        storage: Storage | None = self.pm.hook.swiftmail_storage(settings=self.settings)
        if storage is None:
            raise ConfigurationError(
                "no storage plugin is loaded: enable 'local_storage' or install another"
            )
        return storage

    def compose_message(self, message: EmailMessage, context: dict[str, Any]) -> None:
        """Let plugins add or change headers before signing."""
        self.pm.hook.swiftmail_compose_message(message=message, context=context)

    def doctor_checks(self) -> list[Finding]:
        """Return every plugin's ``swiftmail_doctor_checks`` findings."""
        return [finding for findings in self.pm.hook.swiftmail_doctor_checks(
            settings=self.settings) for finding in findings or ()]

    def register_commands(self, cli: click.Group) -> None:
        """Let plugins add CLI commands."""
        self.pm.hook.swiftmail_register_commands(cli=cli)

    def register_routes(self, app: falcon.App) -> None:
        """Let plugins add web routes."""
        self.pm.hook.swiftmail_register_routes(
            app=app, settings=self.settings, plugin_manager=self)


def _raising_plugin(ex: BaseException, impls: Iterable[pluggy.HookImpl]) -> str:
    """Name the plugin whose implementation raised ``ex`` (or ``?``)."""
    codes = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in impls}
    traceback = ex.__traceback__
    name = "?"
    while traceback is not None:
        name = codes.get(traceback.tb_frame.f_code, name)
        traceback = traceback.tb_next
    return name


def _one_line(ex: BaseException) -> str:
    """Return an exception's message on one line (pluggy's span several)."""
    return " ".join(line.strip() for line in str(ex).splitlines() if line.strip())


def check_host_requirement(name: str, metadata: importlib.metadata.PackageMetadata) -> None:
    """Refuse plugin ``name`` when its distribution requires another SwiftMail version."""
    for line in metadata.get_all("Requires-Dist") or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != HOST_DISTRIBUTION:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(__version__, prereleases=True):
            raise PluginError(
                f"plugin {name!r} ({metadata['Name']} {metadata['Version']}) requires "
                f"{requirement}, but this is swiftmail {__version__}: install a release of the "
                "plugin made for it, or add it to SWIFTMAIL_DISABLED_PLUGINS"
            )
