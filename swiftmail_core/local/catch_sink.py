"""An SMTP sink on loopback that keeps every message it catches as a file.

``swiftmail up`` points the relay at it on the embedded default, so mail
that would go to the internet lands in ``DATA_DIR/caught/`` as ``.eml``
files a mail client opens; nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class CatchSink:
    """Accept every message on 127.0.0.1 and write it to ``directory``."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.caught = 0
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> CatchSink:
        """Start listening; return self."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def keep(self, mail_from: str, recipients: list[str], content: bytes) -> Path:
        """Write one caught message (with its envelope as headers) and return its path."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{os.getpid()}-{next(self._sequence):06d}.eml"
        envelope = (f"X-SwiftMail-Caught-From: <{mail_from}>\r\n"
                    f"X-SwiftMail-Caught-For: {', '.join(recipients)}\r\n").encode()
        partial = self.directory / f".{name}.tmp"
        partial.write_bytes(envelope + content)
        final = self.directory / name
        partial.rename(final)
        with self._lock:
            self.caught += 1
        return final


class _Handler:
    def __init__(self, sink: CatchSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        self.sink.keep(envelope.mail_from, list(envelope.rcpt_tos), content)
        return "250 2.0.0 caught by the local sink"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
