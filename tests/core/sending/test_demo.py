"""The demo campaign the README's run command sends, through the relay."""

from __future__ import annotations

from swiftmail_core.sending.demo import run_demo_campaign


def test_demo_campaign_goes_through_the_relay_signed(runtime, run_id) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []
    report = run_demo_campaign(runtime, recipients=40, tenant_slug=f"demo-{run_id}",
                               progress=lambda done, total: seen.append((done, total)))
    assert report.transport == "relay"
    assert report.recipients == 40 and report.delivered == 40
    assert report.dkim_signed == 40  # signed at the spool hand-off with the tenant's key
    assert report.ledger == {"delivered": 40}  # the relay recorded every delivery
    assert ", a meetup in " in report.sample_subject
    assert report.sink.startswith("127.0.0.1:")
    assert seen and seen[-1] == (40, 40)
    again = run_demo_campaign(runtime, recipients=40, tenant_slug=f"demo-{run_id}")
    assert again.campaign_id != report.campaign_id  # a new list and campaign each run
    assert again.delivered == 40 and again.dkim_signed == 40
    assert again.ledger == {"delivered": 40}
