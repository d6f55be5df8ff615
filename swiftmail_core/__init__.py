"""SwiftMail core: settings, database, tenant isolation and the plugin host."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("swiftmail")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
