"""The webhook POST goes out at most once per attempt (urllib3, connect-only retries)."""

from __future__ import annotations

import socket
import threading

from swiftmail_core.webhooks.transport import post
from swiftmail_core.webhooks.urls import UrlPolicy, check_webhook_url

LOOPBACK = UrlPolicy(allow_loopback_http=True)


class _Peer:
    """A loopback peer that reads each request, then resets or answers 200."""

    def __init__(self, address: str, port: int, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((address, port))
        self.server.listen(8)
        self.server.settimeout(0.1)  # accept wakes up to see ``stop``
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                self.requests += 1
                if self.behaviour == "reset":
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
                else:
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                       b"Connection: close\r\n\r\nok")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_reset_after_the_request_was_read_is_one_post() -> None:
    peer = _Peer("127.0.0.1", 0, "reset")
    try:
        checked = check_webhook_url(f"http://127.0.0.1:{peer.port}/hook", LOOPBACK)
        result = post(checked, b"{}", {"Content-Type": "application/json"}, timeout=2.0)
        assert not result.ok and "outcome unknown" in result.excerpt
        assert peer.requests == 1
    finally:
        peer.close()


def test_a_request_that_went_out_is_not_sent_to_the_next_address() -> None:
    # Regression: any OSError moved on to the host's next address and POSTed again.
    port = _free_port()
    first, second = _Peer("127.0.0.1", port, "reset"), _Peer("127.0.0.2", port, "ok")
    try:
        checked = check_webhook_url(f"http://hooks.test:{port}/hook", LOOPBACK,
                                    resolve=lambda host: ["127.0.0.1", "127.0.0.2"])
        result = post(checked, b"{}", {}, timeout=2.0)
        assert (first.requests, second.requests) == (1, 0)
        assert result.status == 0
    finally:
        first.close()
        second.close()


def test_an_address_that_refuses_the_connection_falls_through_to_the_next() -> None:
    port = _free_port()  # nothing listens on 127.0.0.1 at this port
    second = _Peer("127.0.0.2", port, "ok")
    try:
        checked = check_webhook_url(f"http://hooks.test:{port}/hook", LOOPBACK,
                                    resolve=lambda host: ["127.0.0.1", "127.0.0.2"])
        result = post(checked, b"{}", {}, timeout=2.0)
        assert result.ok and result.excerpt == "ok"
        assert second.requests == 1
    finally:
        second.close()
