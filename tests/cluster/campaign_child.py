"""Control host helper of the campaign chaos test: create the campaign, read its ledger.

Usage (settings from the environment):
    python -m tests.cluster.campaign_child create RECIPIENTS DOMAIN
        prints {"tenant": ..., "campaign": ...} once the campaign is scheduled
    python -m tests.cluster.campaign_child counts TENANT CAMPAIGN
        prints {status: count} of the campaign's ledger
"""

from __future__ import annotations

import json
import sys
import uuid

from swiftmail_core.runtime import ProcessKind, start
from swiftmail_core.settings import load_settings


def main(argv: list[str]) -> None:
    """Run one sub-command (see the module docstring)."""
    from swiftmail_core.sending import lifecycle
    from swiftmail_core.tenants import create_tenant
    from tests.core.sending.conftest import (
        add_subscribers,
        ledger_counts,
        make_campaign,
        make_list,
    )

    runtime = start(load_settings(), process=ProcessKind.TEST)
    try:
        if argv[0] == "create":
            count, domain = int(argv[1]), argv[2]
            tenant = create_tenant(f"chaos-{uuid.uuid4().hex[:8]}")
            audience = make_list(tenant.id)
            add_subscribers(tenant.id, audience, count, domain=domain)
            campaign = make_campaign(tenant.id, [audience], transport="relay")
            lifecycle.schedule_campaign(tenant.id, campaign)
            print(json.dumps({"tenant": str(tenant.id), "campaign": str(campaign)}), flush=True)
        else:
            print(json.dumps(ledger_counts(uuid.UUID(argv[1]), uuid.UUID(argv[2]))), flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
