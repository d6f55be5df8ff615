"""`swiftmail tracking serve`: uvicorn's options, and who decides the visitor's address."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest
import redis.asyncio
import uvicorn
from swiftmail_web.public.asgi import build_app
from swiftmail_web.public.asgi_server import server_options

from swiftmail_core import tokens
from swiftmail_core.errors import ConfigurationError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _recorded_address(services, redis_url, settings, message, forwarded_for: str) -> str:  # type: ignore[no-untyped-def]
    """Serve the hot path with the shipped uvicorn options; return the hit's stored address."""
    port = _free_port()
    app = build_app(services, redis.asyncio.Redis.from_url(redis_url))
    server = uvicorn.Server(uvicorn.Config(app, **server_options(f"127.0.0.1:{port}")))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        token = tokens.make_open_token(settings.secret_key, message.tenant_id, message.message_id)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(f"GET /t/o/{token}.gif HTTP/1.1\r\nHost: t.example\r\n"
                               f"X-Forwarded-For: {forwarded_for}\r\nConnection: close\r\n\r\n"
                               .encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    (_, fields), = services.stream.client.xrange(services.config.stream)
    services.stream.client.delete(services.config.stream)
    return fields[b"ip"].decode()


def test_a_visitor_cannot_choose_the_address_when_no_proxy_is_trusted(
        public_services, redis_url, settings, sent_message) -> None:  # type: ignore[no-untyped-def]
    # Regression: uvicorn's proxy-headers middleware (on by default) replaced the peer
    # of every loopback request by its X-Forwarded-For entry before the app's own
    # trusted-proxy logic ran, so with no proxy trusted the visitor's header was stored.
    assert public_services.config.trusted_hops == 0
    address = _recorded_address(public_services, redis_url, settings, sent_message,
                                "198.51.100.7")
    assert address == "127.0.0.1"


def test_the_trusted_hop_decides_the_address(
        public_services, redis_url, settings, sent_message) -> None:  # type: ignore[no-untyped-def]
    one_hop = dataclasses.replace(public_services,
                                  config=dataclasses.replace(public_services.config,
                                                             trusted_hops=1))
    address = _recorded_address(one_hop, redis_url, settings, sent_message,
                                "192.0.2.1, 198.51.100.7")
    assert address == "198.51.100.7"


def test_server_options() -> None:
    options = server_options("10.0.0.11:8001", workers=2)
    assert (options["host"], options["port"], options["workers"]) == ("10.0.0.11", 8001, 2)
    assert options["proxy_headers"] is False and options["loop"] == "uvloop"
    assert server_options("[::1]:8001")["host"] == "::1"
    assert server_options("unix:/run/swiftmail/t.sock")["uds"] == "/run/swiftmail/t.sock"
    with pytest.raises(ConfigurationError, match="--bind"):
        server_options("8001")


def test_each_served_worker_freezes_its_start_up_objects(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: a tracking worker's full garbage collections walked every object its
    # start-up left (about 86,000) and took 48-124 ms each at 5,000 hits/s, every request
    # on that worker waiting; uvicorn now builds each worker's app through a factory that
    # freezes them once the app is built.
    import uvicorn.importer
    from swiftmail_web.public import asgi, asgi_server

    calls: list[str] = []
    monkeypatch.setattr(asgi, "create_app", lambda: calls.append("app") or "the app")
    monkeypatch.setattr(asgi_server, "freeze_startup_objects", lambda: calls.append("freeze"))
    factory = uvicorn.importer.import_from_string(asgi_server.APP)
    assert factory() == "the app"
    assert calls == ["app", "freeze"]
