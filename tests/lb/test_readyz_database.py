"""/readyz of a running `swiftmail serve` answers 503 while PostgreSQL is unreachable.

The API's database connections go through a loopback forwarder; cutting it
takes PostgreSQL away from the running process, putting it back brings
/readyz back to 200 (the pool drops the dead connections).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import psycopg2.extensions

from tests.lb.processes import wait_for
from tests.lb.tcp_forwarder import TcpForwarder


def _readyz(url: str) -> tuple[int | None, dict]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as ex:
        return ex.code, json.loads(ex.read())
    except OSError:
        return None, {}


def test_readyz_follows_the_database(make_api) -> None:  # type: ignore[no-untyped-def]
    api = make_api("127.0.0.2")
    params = psycopg2.extensions.parse_dsn(api.environ["DATABASE_URL"])
    forwarder = TcpForwarder((params.get("host", "127.0.0.1"), int(params.get("port", 5432))))
    try:
        api.environ["DATABASE_URL"] = psycopg2.extensions.make_dsn(
            **{**params, "host": "127.0.0.1", "port": str(forwarder.port)})
        api.environ["SWIFTMAIL_DB_CONNECT_TIMEOUT_SECONDS"] = "2"
        api.start()
        api.wait_ready()

        forwarder.cut()
        wait_for("/readyz to answer 503", lambda: _readyz(api.url)[0] == 503, timeout=60)
        status, body = _readyz(api.url)
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("unavailable")
        assert body["checks"]["redis"] == "ok"

        forwarder.restore()
        wait_for("/readyz to answer 200 again", lambda: _readyz(api.url)[0] == 200, timeout=60)
    finally:
        forwarder.close()
