"""Run a relay's platform intake on a loopback port in a thread of its own."""

from __future__ import annotations

import asyncio
import socket
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


def _read_http(sock: socket.socket, data: bytes = b"") -> bytes:
    """Read one HTTP message (head and Content-Length body) from ``sock``."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(data) - len(head) - 4 < length:
        data += sock.recv(65536)
    return data


class FlakyIntakeProxy:
    """In front of a real intake; what becomes of each request is the next of ``modes``.

    ``spooled``: forwarded, the intake answers 200 (durable), the answer is
    dropped (the relay died before answering); ``lost``: read and dropped,
    never forwarded (it died before spooling); ``pass``: a working relay.
    After ``modes`` run out, requests are ``then`` until ``recover()``.
    """

    def __init__(self, target: str | None, modes: list[str], then: str = "lost") -> None:
        host, _, port = (target or "").rpartition(":")
        self.target = (host, int(port)) if target else None
        self.modes = list(modes)
        self.then = then
        self.recovered = False
        self.seen: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def recover(self) -> None:
        """Answer every request from now on (the relay is back)."""
        self.recovered = True

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(10)
                self._serve_connection(client)

    def _serve_connection(self, client: socket.socket) -> None:
        """Serve the requests of one (keep-alive) connection until one is not answered."""
        while True:
            request = _read_http(client)
            if not request:
                return
            mode = "pass" if self.recovered else (self.modes.pop(0) if self.modes else self.then)
            self.seen.append(mode)
            if mode == "lost" or self.target is None:
                return
            with socket.create_connection(self.target, timeout=10) as upstream:
                upstream.sendall(request)
                answer = _read_http(upstream)
            if mode != "pass":
                return
            client.sendall(answer)

    @property
    def forwarded(self) -> int:
        """Return how many requests reached the intake."""
        return sum(1 for mode in self.seen if mode != "lost")

    def stop(self) -> None:
        """Stop serving."""
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
