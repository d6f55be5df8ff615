"""A campaign edit reaches the very next message: renderers are keyed on the campaign's version."""

from __future__ import annotations

import email
import email.policy

from swiftmail_core.db import tenant_tx
from swiftmail_core.sending import outbox
from swiftmail_core.sending.audience import resolve_audience
from swiftmail_core.sending.compose import Composer
from tests.core.sending.conftest import (
    add_subscribers,
    make_campaign,
    make_list,
    park_other_tenants_work,
)


def _subjects(composer: Composer, tenant_id) -> list[str]:  # type: ignore[no-untyped-def]
    claimed = [c for c in outbox.claim_batch(limit=1) if c.tenant_id == tenant_id]
    messages, failures = composer.compose(claimed)
    assert not failures
    return [str(email.message_from_bytes(m.raw, policy=email.policy.default)["Subject"])
            for m in messages]


def test_an_edited_subject_is_in_the_next_message_of_the_same_worker(settings, runtime,
                                                                     tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: the per-process renderer cache kept a campaign for 120 s, so a message
    # rendered after an edit still carried the old subject and HTML.
    list_id = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, list_id, 2, domain="cache.test")
    campaign_id = make_campaign(tenant_a.id, [list_id], subject="First subject")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                             (str(campaign_id),))
    resolve_audience(tenant_a.id, campaign_id)
    park_other_tenants_work(tenant_a.id)
    composer = Composer(settings, runtime.plugins)
    assert _subjects(composer, tenant_a.id) == ["First subject"]
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET subject = 'Edited subject', "
                             "updated_at = now() WHERE id = %s", (str(campaign_id),))
    assert _subjects(composer, tenant_a.id) == ["Edited subject"]


def test_each_variant_renders_its_own_content_and_an_edit_reaches_the_next_message(
        settings, runtime, tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.ab_tests import variants

    list_id = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, list_id, 6, domain="variants.test")
    campaign_id = make_campaign(tenant_a.id, [list_id], subject="Campaign subject")

    def set_subjects(first: str, second: str) -> None:
        with tenant_tx(tenant_a.id) as database:
            database.execute_sql("UPDATE campaigns SET status = 'scheduled' WHERE id = %s",
                                 (str(campaign_id),))
        variants.set_ab_test(tenant_a.id, campaign_id, variants.AbSettings(100, "manual", 0),
                             [{"subject": first}, {}, {"subject": second}])
        with tenant_tx(tenant_a.id) as database:
            database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                                 (str(campaign_id),))

    set_subjects("Subject A", "Subject C")
    resolve_audience(tenant_a.id, campaign_id)
    park_other_tenants_work(tenant_a.id)
    claimed = [c for c in outbox.claim_batch(limit=10) if c.tenant_id == tenant_a.id]
    assert sorted(c.variant for c in claimed) == ["A", "A", "B", "B", "C", "C"]
    composer = Composer(settings, runtime.plugins)

    def subjects() -> dict[str, set[str]]:
        messages, failures = composer.compose(claimed)
        assert not failures
        variant = {c.ledger_id: c.variant for c in claimed}
        found: dict[str, set[str]] = {}
        for message in messages:
            parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
            found.setdefault(variant[message.ledger_id], set()).add(str(parsed["Subject"]))
        return found

    # B sets no subject: it is the campaign's.
    assert subjects() == {"A": {"Subject A"}, "B": {"Campaign subject"}, "C": {"Subject C"}}
    set_subjects("Edited A", "Subject C")
    assert subjects() == {"A": {"Edited A"}, "B": {"Campaign subject"}, "C": {"Subject C"}}
