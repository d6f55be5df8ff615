"""An open-loop HTTP load generator: a fixed offered rate, latency from the intended start.

A closed-loop tool (wrk, ``hey -q``: each connection sends its next request
only after the last answer) slows down with the server and never counts the
requests it did not send while a slow answer held it: coordinated omission.
Here request ``i`` is *due* at ``start + i / rate`` whatever happened before;
a pool of keep-alive connections takes due requests in order, and each
latency runs from the due time to the end of the answer, so time a request
spent waiting for a free connection (the server being slow) is counted, as
wrk2 does.

Run as a program (its own process, so it does not share a GIL with the
benchmark); prints one JSON line::

    python bench/_open_loop.py --port 8080 --paths paths.txt --rate 2000 --seconds 10

``paths.txt`` holds one request path a line, used in rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p99_ms": 0.99, "p999_ms": 0.999}


def quantile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of sorted ``values`` (nearest rank)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


async def _fetch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 request: bytes) -> int:
    """Send one keep-alive GET; read the whole answer; return its status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def generate(host: str, port: int, paths: list[str], rate: float, seconds: float,
                   connections: int, timeout: float = 10.0) -> dict[str, Any]:
    """Offer ``rate`` requests/s for ``seconds``; return latency quantiles and counts."""
    total = int(rate * seconds)
    requests = [
        (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
         "User-Agent: Mozilla/5.0 (X11) Firefox/120\r\n\r\n").encode()
        for path in paths]
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    statuses: dict[int, int] = {}
    clock = time.perf_counter  # the event loop's clock is only millisecond-precise
    start = clock() + 0.2

    async def dispatch() -> None:
        for index in range(total):
            at = start + index / rate
            delay = at - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait((index, at))
        for _ in range(connections):
            due.put_nowait(None)

    async def connection() -> None:
        reader = writer = None
        while (item := await due.get()) is not None:
            index, at = item
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                status = await asyncio.wait_for(
                    _fetch(reader, writer, requests[index % len(requests)]), timeout)
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(clock() - at)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as ex:
                errors[type(ex).__name__] = errors.get(type(ex).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = clock()
    await asyncio.gather(dispatch(), *(connection() for _ in range(connections)))
    elapsed = clock() - started - 0.2
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 400)
    figures: dict[str, Any] = {
        "offered_rate": rate, "requests": total, "completed": len(latencies), "ok": ok,
        "not_2xx_3xx": len(latencies) - ok, "errors": errors,
        "achieved_rate": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "connections": connections,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }
    for name, q in QUANTILES.items():
        figures[name] = round(quantile(latencies, q) * 1000, 2)
    return figures


def main() -> None:
    """Parse the arguments, run the generator, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    paths = args.paths.read_text().split()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(generate(args.host, args.port, paths, args.rate,
                                          args.seconds, args.connections))))


if __name__ == "__main__":
    main()
