"""The open-loop generator offers every request and counts waiting from the due time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._open_loop import generate, quantile  # noqa: E402

STALL_S = 0.3


async def _serve_with_one_stall() -> tuple[asyncio.AbstractServer, int, list[str]]:
    """A keep-alive HTTP server whose first answer takes STALL_S; return it, its port, paths."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b" ")[1].decode())
                if len(seen) == 1:
                    await asyncio.sleep(STALL_S)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nGIF")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.mark.timeout(30)
def test_every_request_is_sent_and_a_stall_counts_for_the_requests_it_delayed() -> None:
    async def scenario() -> tuple[dict, list[str]]:  # type: ignore[type-arg]
        server, port, seen = await _serve_with_one_stall()
        async with server:
            figures = await generate("127.0.0.1", port, ["/a", "/b"], rate=200, seconds=1,
                                     connections=1)
        return figures, seen

    figures, seen = asyncio.run(scenario())
    assert (figures["requests"], figures["completed"], figures["ok"]) == (200, 200, 200)
    assert figures["errors"] == {}
    assert seen[:4] == ["/a", "/b", "/a", "/b"]
    # One connection: the requests due during the stall waited for it, and that
    # waiting is their latency (a closed-loop tool would record one slow request).
    assert figures["p90_ms"] >= 0.1 * STALL_S * 1000
    assert figures["max_ms"] >= STALL_S * 1000


def test_quantile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.99), quantile(values, 1.0)) == (50, 99, 100)
    assert quantile([], 0.5) != quantile([], 0.5)  # NaN
