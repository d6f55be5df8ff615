"""RFC 3463 classification with the override table."""

from __future__ import annotations

import pytest
from swiftmail_relay.classify import Reply, classify


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("550 5.1.1 <x@example.com>: Recipient address rejected: User unknown", (True, "hard")),
        ("552 5.2.2 Mailbox full", (True, "mailbox_full")),
        ("452 4.2.2 The email account that you tried to reach is over quota", (False, "mailbox_full")),
        ("554 5.7.1 Service unavailable; client host blocked using Spamhaus", (True, "policy")),
        ("421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred", (False, "throttled")),
        ("450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
         "prevents additional messages from being delivered. unusual rate", (False, "throttled")),
        ("552 5.5.3 Too many recipients", (False, "soft")),
        ("451 4.3.0 Temporary local problem", (False, "soft")),
        ("550 5.0.0 Rejected", (True, "hard")),
        ("556 5.1.10 domain accepts no mail (null MX)", (True, "hard")),
    ],
)
def test_classification(line: str, expected: tuple[bool, str]) -> None:
    assert classify(Reply.parse(line)) == expected


def test_enhanced_code_parsed() -> None:
    assert Reply.parse("550 5.1.1 nope").enhanced == "5.1.1"
    assert Reply.parse("250 ok").enhanced is None
