"""Run a relay's platform intake on a loopback port in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swiftmail_relay.config import RelayConfig
from swiftmail_relay.platform_intake import IntakeServer, serve_intake
from swiftmail_relay.spool import Spool

from swiftmail_core.settings import Settings


class IntakeThread:
    """A platform intake (no delivery) on ``host``, spooling into ``spool_dir``."""

    def __init__(self, settings: Settings, spool_dir: Path, *, host: str = "127.0.0.1",
                 port: int = 0, spool: Spool | None = None, **relay_options: Any) -> None:
        self.settings = settings
        self.config = RelayConfig.from_settings(settings, spool_dir=str(spool_dir),
                                                **relay_options)
        self.spool = spool or Spool(spool_dir)
        self.listen = (host, port)
        self.notified: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="intake-test")
        self.server: IntakeServer | None = None

    def _notify(self, queue_ids: Sequence[str]) -> None:
        self.notified.extend(queue_ids)

    def __enter__(self) -> IntakeThread:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(serve_intake(
            self.settings, self.config, notify=self._notify, listen=self.listen,
            spool=self.spool), self.loop).result(15)
        return self

    @property
    def address(self) -> str:
        """Return HOST:PORT of the listening intake."""
        assert self.server is not None
        return f"{self.server.address[0]}:{self.server.address[1]}"

    @property
    def url(self) -> str:
        """Return the intake's URL."""
        return f"http://{self.address}/v1/spool"

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
            asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
