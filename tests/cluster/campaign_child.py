"""Control host helper of the campaign chaos test: the tenant, its audience and API key.

Usage (settings from the environment):
    python -m tests.cluster.campaign_child create RECIPIENTS DOMAIN
        prints {"tenant": ..., "list": ..., "key": ...} once the list has its subscribers

The campaign itself is created and scheduled through the API
(``tests.cluster.api_client``); the subscribers are written straight to the
database because tens of thousands of API calls would only test the import.
"""

from __future__ import annotations

import json
import sys
import uuid

from swiftmail_core.runtime import ProcessKind, start
from swiftmail_core.settings import load_settings


def main(argv: list[str]) -> None:
    """Run one sub-command (see the module docstring)."""
    from swiftmail_core.apikeys import create_api_key
    from swiftmail_core.tenants import create_tenant
    from tests.core.sending.conftest import add_subscribers, make_list

    runtime = start(load_settings(), process=ProcessKind.TEST)
    try:
        count, domain = int(argv[1]), argv[2]
        tenant = create_tenant(f"chaos-{uuid.uuid4().hex[:8]}")
        audience = make_list(tenant.id)
        add_subscribers(tenant.id, audience, count, domain=domain)
        key = create_api_key(tenant.id, role="editor", name="chaos").key
        print(json.dumps({"tenant": str(tenant.id), "list": str(audience), "key": key}),
              flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
