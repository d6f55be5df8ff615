"""A threaded HTTP/1.1 server on loopback for provider stand-ins."""

from __future__ import annotations

import collections
import http.server
import threading
from typing import Any


class StandinHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive request handler; the server object does the work."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status, headers, payload = self.server.handle(self.path, self.headers, body)  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class StandinServer(http.server.ThreadingHTTPServer):
    """Base of the stand-ins: scripted failures first, then ``answer``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandinHandler)
        self.lock = threading.Lock()
        self.forced: collections.deque[tuple[int, dict[str, str], bytes]] = collections.deque()
        self.requests = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """Return http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def force(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"",
              times: int = 1) -> None:
        """Answer the next ``times`` requests with this response."""
        for _ in range(times):
            self.forced.append((status, headers or {}, body))

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one request."""
        with self.lock:
            self.requests += 1
            forced = self.forced.popleft() if self.forced else None
        if forced:
            return forced
        return self.answer(path, headers, body)

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer a request that no scripted failure took."""
        raise NotImplementedError

    def __enter__(self) -> StandinServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
