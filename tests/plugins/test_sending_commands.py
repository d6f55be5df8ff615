"""`swiftmail send ...` through the real entry point."""

from __future__ import annotations

import json

from tests.cli_helpers import run_swiftmail
from tests.core.sending.conftest import add_subscribers, make_campaign, make_list


def test_schedule_status_pause_cancel_and_errors(test_environ, tenant_a) -> None:  # type: ignore[no-untyped-def]
    first = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, first, 5, start=300, domain="cli.example.test")
    campaign_id = str(make_campaign(tenant_a.id, [first]))
    scheduled = run_swiftmail("send", "schedule", tenant_a.slug, campaign_id, "--at",
                              "2031-01-01T09:00:00+00:00", env=test_environ)
    assert scheduled.returncode == 0, scheduled.stderr
    assert "scheduled" in scheduled.stdout
    status = run_swiftmail("send", "status", tenant_a.slug, campaign_id, env=test_environ)
    assert json.loads(status.stdout) == {"status": "scheduled", "recipients": 0, "ledger": {}}
    refused = run_swiftmail("send", "pause", tenant_a.slug, campaign_id, env=test_environ)
    assert refused.returncode == 1 and "paused only from sending" in refused.stderr + refused.stdout
    cancelled = run_swiftmail("send", "cancel", tenant_a.slug, campaign_id, env=test_environ)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    bad = run_swiftmail("send", "schedule", tenant_a.slug, campaign_id, "--at", "tomorrow",
                        env=test_environ)
    assert bad.returncode == 1 and "--at" in bad.stderr + bad.stdout
