"""When no API host is ready (Redis down for all alike), HAProxy still sends to live ones.

The template's frontend switches to the ``swiftmail_api_live`` backend
(checked on /healthz) while ``swiftmail_api`` (checked on /readyz) has no
server UP: the API answers what it can (the rate limiter fails open) rather
than HAProxy answering 503 for everything.
"""

from __future__ import annotations

import urllib.request

from swiftmail_core.apikeys import create_api_key
from tests.lb.conftest import API_HOSTS
from tests.lb.processes import http_status, rolling_restart_module, wait_for


def test_no_ready_host_falls_back_to_live_hosts(make_api, haproxy, tenant_a) -> None:  # type: ignore[no-untyped-def]
    apis = [make_api(host) for host in API_HOSTS]
    for api in apis:
        api.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
        api.start()
    for api in apis:
        wait_for(f"{api.address} to answer /healthz",
                 lambda api=api: http_status(api.url + "/healthz") == 200, timeout=60)
        assert http_status(api.url + "/readyz") == 503
    proxy = haproxy([api.address for api in apis])
    tool = rolling_restart_module()

    def status(backend: str) -> set[str]:
        stats = tool.server_stats(proxy.socket_path)
        return {row["status"] for (name, _), row in stats.items() if name == backend}

    # HAProxy starts servers UP; wait until the /readyz check has taken both out.
    wait_for("no server UP in swiftmail_api", lambda: status("swiftmail_api") == {"DOWN"},
             timeout=60)
    wait_for("both servers UP in swiftmail_api_live",
             lambda: status("swiftmail_api_live") == {"UP"}, timeout=60)
    key = create_api_key(tenant_a.id, role="viewer").key
    request = urllib.request.Request(proxy.url + "/v1/contacts",  # noqa: S310 - loopback
                                     headers={"Authorization": f"Bearer {key}"})

    def served() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    wait_for("HAProxy to serve through the live hosts", served, timeout=60)
    assert http_status(proxy.url + "/readyz") == 503  # and the answer still says why
