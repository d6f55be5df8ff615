"""Signed public tokens: round trips, tampering, cross-kind and cross-key refusal."""

from __future__ import annotations

import base64
import uuid

import pytest

from swiftmail_core import crypto, tokens
from swiftmail_core.errors import ValidationError

KEY = "k" * 40
OTHER_KEY = "o" * 40
TENANT = uuid.uuid4()
OTHER_TENANT = uuid.uuid4()
CONTACT = uuid.uuid4()
OTHER_CONTACT = uuid.uuid4()
LIST = uuid.uuid4()


def _all_tokens() -> dict[str, tuple[str, object]]:
    return {
        "open": (tokens.make_open_token(KEY, TENANT, 42), tokens.read_open_token),
        "click": (tokens.make_click_token(KEY, TENANT, 7, 42), tokens.read_click_token),
        "unsubscribe": (
            tokens.make_unsubscribe_token(KEY, TENANT, CONTACT, LIST),
            tokens.read_unsubscribe_token,
        ),
        "preferences": (
            tokens.make_preferences_token(KEY, TENANT, CONTACT),
            tokens.read_preferences_token,
        ),
        "confirm": (
            tokens.make_confirm_token(KEY, TENANT, CONTACT, LIST),
            tokens.read_confirm_token,
        ),
        "view": (tokens.make_view_token(KEY, TENANT, 42), tokens.read_view_token),
    }


def test_round_trips() -> None:
    assert tokens.read_open_token(KEY, tokens.make_open_token(KEY, TENANT, 42)) == (
        tokens.OpenToken(TENANT, 42)
    )
    assert tokens.read_click_token(
        KEY, tokens.make_click_token(KEY, TENANT, 7, 2**40)
    ) == tokens.ClickToken(TENANT, 7, 2**40)
    assert tokens.read_unsubscribe_token(
        KEY, tokens.make_unsubscribe_token(KEY, TENANT, CONTACT, LIST)
    ) == tokens.UnsubscribeToken(TENANT, CONTACT, LIST)
    assert tokens.read_unsubscribe_token(
        KEY, tokens.make_unsubscribe_token(KEY, TENANT, CONTACT, None)
    ) == tokens.UnsubscribeToken(TENANT, CONTACT, None)
    assert tokens.read_preferences_token(
        KEY, tokens.make_preferences_token(KEY, TENANT, CONTACT)
    ) == tokens.PreferencesToken(TENANT, CONTACT)
    assert tokens.read_confirm_token(
        KEY, tokens.make_confirm_token(KEY, TENANT, CONTACT, LIST)
    ) == tokens.ConfirmToken(TENANT, CONTACT, LIST)
    assert tokens.read_view_token(KEY, tokens.make_view_token(KEY, TENANT, 9)) == (
        tokens.ViewToken(TENANT, 9)
    )


def test_tokens_are_short_url_safe_and_deterministic() -> None:
    for token, _ in _all_tokens().values():
        assert len(token) <= 90
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert tokens.make_click_token(KEY, TENANT, 7, 42) == tokens.make_click_token(
        KEY, TENANT, 7, 42
    )


def test_mac_is_crypto_sign_truncated() -> None:
    token = tokens.make_click_token(KEY, TENANT, 7, 42)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload, mac = raw[:-16], raw[-16:]
    assert mac == crypto.sign(KEY, "token:click:sealed", payload)[:16]


def test_ids_are_sealed_and_earlier_clear_tokens_still_read() -> None:
    # Regression: open, click and view tokens carried the global ledger and link ids
    # in the clear, so any recipient could read the platform's volume off a link.
    signer = tokens.signer(KEY)
    click = tokens.make_click_token(KEY, TENANT, 7, 42)
    raw = base64.urlsafe_b64decode(click + "=" * (-len(click) % 4))
    assert (7).to_bytes(8, "big") + (42).to_bytes(8, "big") not in raw
    for kind, make, read in (
            (tokens.KIND_OPEN, tokens.make_open_token, tokens.read_open_token),
            (tokens.KIND_VIEW, tokens.make_view_token, tokens.read_view_token)):
        raw = base64.urlsafe_b64decode(make(KEY, TENANT, 42) + "==")
        assert (42).to_bytes(8, "big") not in raw
        clear = signer.seal(kind, TENANT.bytes + (42).to_bytes(8, "big"))
        assert read(KEY, clear).message_id == 42
    clear_click = signer.seal(tokens.KIND_CLICK, TENANT.bytes + (7).to_bytes(8, "big")
                              + (42).to_bytes(8, "big"))
    assert (tokens.read_click_token(KEY, clear_click).link_id,
            tokens.read_click_token(KEY, clear_click).message_id) == (7, 42)
    assert tokens.read_click_token(KEY, click).message_id == 42
    assert signer.click_minter(TENANT.bytes)(7, 42) == click


@pytest.mark.parametrize("kind", ["open", "click", "unsubscribe", "preferences", "confirm", "view"])
def test_altered_truncated_extended_tokens_refused(kind: str) -> None:
    token, read = _all_tokens()[kind]
    for position in range(len(token)):
        replacement = "A" if token[position] != "A" else "B"
        altered = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(ValidationError):
            read(KEY, altered)
    for cut in (1, 2, 5, len(token) // 2, len(token) - 1):
        with pytest.raises(ValidationError):
            read(KEY, token[:-cut])
    for bad in (token + "A", token + "==", "", "!!!", token.replace("-", "+")):
        if bad == token:
            continue
        with pytest.raises(ValidationError):
            read(KEY, bad)
    with pytest.raises(ValidationError):
        read(OTHER_KEY, token)


def test_one_kind_never_reads_as_another() -> None:
    made = _all_tokens()
    for kind, (token, _) in made.items():
        for other_kind, (_, read) in made.items():
            if other_kind != kind:
                with pytest.raises(ValidationError):
                    read(KEY, token)


def test_another_tenants_or_contacts_token_is_a_different_token() -> None:
    mine = tokens.make_unsubscribe_token(KEY, TENANT, CONTACT, LIST)
    theirs = tokens.make_unsubscribe_token(KEY, OTHER_TENANT, CONTACT, LIST)
    other_contact = tokens.make_unsubscribe_token(KEY, TENANT, OTHER_CONTACT, LIST)
    assert len({mine, theirs, other_contact}) == 3
    assert tokens.read_unsubscribe_token(KEY, theirs).tenant_id == OTHER_TENANT
    # Splicing another tenant's id into my token (keeping my MAC) is refused.
    raw = bytearray(base64.urlsafe_b64decode(mine + "=" * (-len(mine) % 4)))
    raw[1:17] = OTHER_TENANT.bytes
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(ValidationError):
        tokens.read_unsubscribe_token(KEY, forged)
    raw = bytearray(base64.urlsafe_b64decode(mine + "=" * (-len(mine) % 4)))
    raw[17:33] = OTHER_CONTACT.bytes
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(ValidationError):
        tokens.read_unsubscribe_token(KEY, forged)


def test_error_is_generic_and_names_token_field() -> None:
    with pytest.raises(ValidationError) as caught:
        tokens.read_click_token(KEY, "abc")
    assert caught.value.errors == [{"field": "token", "message": "invalid or altered token"}]


def test_url_builders() -> None:
    base = tokens.tracking_base_url("https://mail.example.com/", None)
    assert base == "https://mail.example.com"
    assert tokens.tracking_base_url("https://x", {"tracking_domain": "t.brand.com"}) == (
        "https://t.brand.com"
    )
    assert tokens.open_url(base, "T") == "https://mail.example.com/t/o/T.gif"
    assert tokens.click_url(base, "T") == "https://mail.example.com/t/c/T"
    assert tokens.unsubscribe_url(base, "T") == "https://mail.example.com/u/T"
    assert tokens.preferences_url(base, "T") == "https://mail.example.com/p/T"
    assert tokens.confirm_url(base, "T") == "https://mail.example.com/confirm/T"
    assert tokens.view_url(base, "T") == "https://mail.example.com/v/T"


def test_click_minter_matches_make_click_token() -> None:
    mint = tokens.signer(KEY).click_minter(TENANT.bytes)
    for link_id, message_id in ((1, 1), (7, 42), (2**40, 2**50), (0, 0)):
        assert mint(link_id, message_id) == tokens.make_click_token(KEY, TENANT, link_id, message_id)
