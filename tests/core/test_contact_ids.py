"""Contact ids: UUIDv7, in the order they were made."""

from __future__ import annotations

import time
import uuid

from swiftmail_core.contact_ids import new_contact_id


def test_a_new_contact_id_is_uuid7_and_starts_with_its_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_contact_id()
    after = time.time_ns() // 1_000_000
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= int.from_bytes(made.bytes[:6], "big") <= after


def test_later_ids_sort_after_earlier_ones_and_never_repeat() -> None:
    first = [new_contact_id() for _ in range(1000)]
    time.sleep(0.002)
    second = [new_contact_id() for _ in range(1000)]
    assert max(first) < min(second)
    assert len(set(first + second)) == 2000


def test_a_contact_inserted_through_the_model_without_an_id_gets_one(tenant_a) -> None:
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.models import Contact

    with tenant_tx(tenant_a.id):
        Contact.insert(tenant_id=tenant_a.id, email="model@example.com").execute()
        made = Contact.get(Contact.email == "model@example.com").id
    assert (uuid.UUID(str(made)).version, uuid.UUID(str(made)).variant) == (7, uuid.RFC_4122)
