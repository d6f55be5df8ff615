"""The demo campaign the README's run command sends."""

from __future__ import annotations

from swiftmail_core.sending.demo import run_demo_campaign


def test_demo_campaign_delivers_every_personalised_message(runtime, run_id) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []
    report = run_demo_campaign(runtime, recipients=40, tenant_slug=f"demo-{run_id}",
                               progress=lambda done, total: seen.append((done, total)))
    assert report.recipients == 40 and report.delivered == 40
    assert report.ledger == {"accepted": 40}
    assert ", a meetup in " in report.sample_subject
    assert seen and seen[-1] == (40, 40)
    again = run_demo_campaign(runtime, recipients=40, tenant_slug=f"demo-{run_id}")
    assert again.delivered == 40  # runs again, a new campaign
