"""Public ids: what the API shows of global bigint ids reveals no tenant's volume.

Regression: ``messages.id``, ``links.id`` and ``webhook_deliveries.id`` come
from sequences shared by every tenant and were shown as they are, so a tenant
could measure another's sending by subtracting two of its own ids.
"""

from __future__ import annotations

import uuid

from swiftmail_core.db import system_tx
from swiftmail_core.public_ids import PublicIds, public_ids

MESSAGE = {"from_email": "app@example.com", "subject": "Hi", "text": "Hello"}


def test_an_id_is_opaque_stable_and_only_the_minting_tenant_can_read_it() -> None:
    ids = PublicIds("k" * 40)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    shown = ids.encode("message", tenant, 41)
    assert shown.startswith("msg_") and "41" not in shown[4:]
    assert ids.encode("message", tenant, 41) == shown
    assert ids.decode("message", tenant, shown) == 41
    assert ids.decode("message", other, shown) is None  # another tenant's id reads as none
    assert ids.decode("link", tenant, shown) is None
    assert ids.encode("message", other, 41) != shown
    for junk in ("msg_", "msg_!!!!", "41", "msg_" + "a" * 26, "lnk_" + shown[4:]):
        assert ids.decode("message", tenant, junk) is None
    # Neighbouring rows are unrelated on the outside.
    assert ids.encode("message", tenant, 42)[:10] != shown[:10] or (
        ids.encode("message", tenant, 42)[10:] != shown[10:])


def test_messages_show_public_ids_and_the_ledger_pages_with_them(owner_a, owner_b, settings) -> None:  # type: ignore[no-untyped-def]
    first = owner_a.post("/v1/messages", {**MESSAGE, "to": "a1@example.com"})
    second = owner_a.post("/v1/messages", {**MESSAGE, "to": "a2@example.com"})
    other = owner_b.post("/v1/messages", {**MESSAGE, "to": "b1@example.com"})
    shown = [first.json["id"], second.json["id"], other.json["id"]]
    assert all(isinstance(value, str) and value.startswith("msg_") for value in shown)
    with system_tx() as database:
        internal = [row[0] for row in database.execute_sql(
            "SELECT id FROM messages WHERE email IN ('a1@example.com', 'a2@example.com', "
            "'b1@example.com') ORDER BY email")]
    assert not {str(number) for number in internal} & set(shown)
    ids = public_ids(settings.secret_key)
    assert ids.decode("message", owner_a.tenant_id, shown[0]) == internal[0]


def test_a_foreign_or_made_up_cursor_is_refused(owner_a, owner_b) -> None:  # type: ignore[no-untyped-def]
    campaign = owner_a.post("/v1/campaigns", {"name": "c"}).json["id"]
    foreign = owner_b.post("/v1/messages", {**MESSAGE, "to": "x@example.com"}).json["id"]
    for cursor in (foreign, "1", "msg_zzzz"):
        listed = owner_a.get(f"/v1/campaigns/{campaign}/messages",
                             params={"starting_after": cursor})
        assert listed.status_code == 422, (cursor, listed.text)
        assert listed.json["errors"][0]["field"] == "starting_after"


def test_event_payloads_for_receivers_carry_public_ids() -> None:
    ids = PublicIds("k" * 40)
    tenant = uuid.uuid4()
    shown = ids.public_event_payload(tenant, {"type": "clicked", "message_id": 7, "link_id": 9,
                                              "campaign_id": "c"})
    assert ids.decode("message", tenant, shown["message_id"]) == 7
    assert ids.decode("link", tenant, shown["link_id"]) == 9
    assert shown["campaign_id"] == "c" and shown["type"] == "clicked"
    assert ids.public_event_payload(tenant, {"message_id": None})["message_id"] is None
