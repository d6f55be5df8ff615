"""Reading wrk's ``--latency`` output (``bench._common.parse_wrk``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._common import parse_wrk

pytestmark = pytest.mark.bench

# wrk's output of a loaded run: latencies in whole seconds end with a space.
SLOW = """Running 10s test @ http://127.0.0.1:23100/v1/contacts/65c1b954
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   703.79ms  464.35ms   1.83s    65.31%
    Req/Sec    23.10     12.72    67.00     53.33%
  Latency Distribution
     50%  474.67ms
     75%    1.18s \n     90%    1.43s \n     99%    1.67s \n  444 requests in 10.10s, 214.03KB read
  Non-2xx or 3xx responses: 3
Requests/sec:     43.96
Transfer/sec:     21.19KB
"""


def test_latencies_in_seconds_are_read() -> None:
    # A p99 of "1.67s " made the API benchmark give up ("no latency distribution").
    figures = parse_wrk(SLOW)
    assert figures == {"rps": 43.96, "p50_ms": pytest.approx(474.67),
                       "p99_ms": pytest.approx(1670.0), "non_2xx": 3.0}
