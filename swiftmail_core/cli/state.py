"""What CLI commands share: settings and a runtime, built on first use."""

from __future__ import annotations

from typing import Any

from swiftmail_core.logs import configure_logging
from swiftmail_core.runtime import ProcessKind, Runtime, start
from swiftmail_core.settings import Settings, load_settings


class CliState:
    """Lazily built settings and runtime for one CLI invocation."""

    def __init__(self, config: str | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        """Return the effective settings (flag > environment > file > default)."""
        if self._settings is None:
            self._settings = load_settings(self.config, self.overrides)
            configure_logging(self._settings.log_level, self._settings.log_format)
        return self._settings

    def reload(self) -> Settings:
        """Re-read settings (after `init` wrote the file)."""
        self._settings = None
        return self.settings

    def runtime(self, process: ProcessKind = ProcessKind.CLI) -> Runtime:
        """Return a connected runtime, started on first use as ``process``.

        A long-running command names its kind (``state.runtime(ProcessKind.WORKER)``)
        before anything else asks for the runtime; other commands are ``cli``.
        """
        if self._runtime is None:
            self._runtime = start(self.settings, process=process)
        return self._runtime

    def close(self) -> None:
        """Release connections at exit."""
        if self._runtime is not None:
            self._runtime.close()
