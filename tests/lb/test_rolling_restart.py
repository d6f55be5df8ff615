"""A rolling restart of two API hosts behind HAProxy fails no request of a steady client.

HAProxy runs contrib/haproxy/haproxy.cfg unchanged; each "host" is a
`swiftmail serve` on its own loopback address. Two rounds, both one host at
a time while clients send GETs and POSTs with an Idempotency-Key through
HAProxy the whole time:

1. through HAProxy's runtime API (contrib/haproxy/rolling_restart.py:
   maintenance, wait for requests in flight, SIGTERM, start, ready, back);
2. through the health check alone, as `systemctl restart` on a host does:
   SIGTERM makes /readyz answer 503 for --drain-seconds, HAProxy takes the
   host out, gunicorn stops gracefully; start it, wait until HAProxy has it UP.

Prints one ``LB-MEASURE {json}`` line (``-s`` shows it; docs/availability.md).
"""

from __future__ import annotations

import http.client
import json
import time

from swiftmail_core.apikeys import create_api_key
from tests.lb.conftest import API_HOSTS
from tests.lb.processes import ApiProcess, rolling_restart_module, wait_for
from tests.lb.steady_client import SteadyClient

DRAIN_SECONDS = 4  # > fall 2 x inter 1 s of the template's /readyz check
CLIENTS = 2


def _served_during(clients: list[SteadyClient], action) -> tuple[int, int, float]:  # type: ignore[no-untyped-def]
    before = [client.counts() for client in clients]
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    after = [client.counts() for client in clients]
    return (sum(a[0] - b[0] for a, b in zip(after, before, strict=True)),
            sum(a[1] - b[1] for a, b in zip(after, before, strict=True)), seconds)


def test_rolling_restart_fails_no_request(make_api, haproxy, tenant_a) -> None:  # type: ignore[no-untyped-def]
    tool = rolling_restart_module()
    apis = [make_api(host, drain_seconds=DRAIN_SECONDS) for host in API_HOSTS]
    for api in apis:
        api.start()
    for api in apis:
        api.wait_ready()
    by_server = {f"api{number}": api for number, api in enumerate(apis, start=1)}
    proxy = haproxy([api.address for api in apis])

    def all_up() -> bool:
        stats = tool.server_stats(proxy.socket_path)
        return all(stats[("swiftmail_api", name)]["status"] == "UP" for name in by_server)

    wait_for("HAProxy to see every API host UP", all_up, timeout=60)

    key = create_api_key(tenant_a.id, role="editor").key
    host, port = proxy.bind.rsplit(":", 1)
    clients = [SteadyClient(host, int(port), key, str(number)) for number in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        wait_for("the clients' first requests", lambda: all(c.counts()[0] >= 10 for c in clients),
                 timeout=60)

        def restart(server: str, address: str) -> None:
            api: ApiProcess = by_server[server]
            assert api.address == address
            assert api.terminate(timeout=60) == 0
            api.start()

        timings: list = []
        runtime_served, runtime_failed, runtime_seconds = _served_during(
            clients, lambda: timings.extend(tool.rolling_restart(
                proxy.socket_path, list(by_server), restart, timeout=90)))

        health_seconds: dict[str, float] = {}

        def restart_by_health_check() -> None:
            for server, api in by_server.items():
                started = time.monotonic()
                assert api.terminate(timeout=60) == 0  # drains DRAIN_SECONDS first
                api.start()
                wait_for(f"HAProxy to see {server} UP again", lambda s=server: tool.server_stats(
                    proxy.socket_path)[("swiftmail_api", s)]["status"] == "UP", timeout=90)
                health_seconds[server] = round(time.monotonic() - started, 2)

        health_served, health_failed, health_total = _served_during(
            clients, restart_by_health_check)
        time.sleep(0.5)
    finally:
        for client in clients:
            client.stopping.set()
        for client in clients:
            client.join(timeout=35)

    failures = [failure for client in clients for failure in client.tally.failures]
    figures = {
        "test": "rolling_restart",
        "hosts": len(apis),
        "requests_total": sum(client.tally.requests for client in clients),
        "gets": sum(client.tally.gets for client in clients),
        "posts": sum(client.tally.posts for client in clients),
        "failed_total": len(failures),
        "runtime_api": {"requests_during": runtime_served, "failed": runtime_failed,
                        "seconds": round(runtime_seconds, 2),
                        "seconds_per_host": {t.server: t.total for t in timings},
                        "phases": [t.__dict__ for t in timings]},
        "health_check": {"requests_during": health_served, "failed": health_failed,
                         "seconds": round(health_total, 2), "seconds_per_host": health_seconds,
                         "drain_seconds": DRAIN_SECONDS},
    }
    print(f"LB-MEASURE {json.dumps(figures, sort_keys=True)}", flush=True)
    assert failures == [], failures[:20]
    assert runtime_served > 0 and health_served > 0

    # A repeated POST through HAProxy replays the stored answer, whichever host takes it.
    created_key, (body, contact_id) = next(iter(clients[0].tally.created.items()))
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/contacts", body=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "Idempotency-Key": created_key})
    response = connection.getresponse()
    assert response.status == 201
    assert response.getheader("Idempotent-Replayed") == "true"
    assert json.loads(response.read())["id"] == contact_id
    connection.close()
