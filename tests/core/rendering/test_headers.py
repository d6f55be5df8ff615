"""Headers: injection refused per field, encoding, List-Unsubscribe, Message-ID, VERP."""

from __future__ import annotations

import email
import uuid
from email import policy

import pytest

from swiftmail_core import tokens
from swiftmail_core.errors import ValidationError
from swiftmail_core.rendering import check_sender, parse_verp, validate_template, verp_return_path

from .conftest import SECRET


def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\0"])
@pytest.mark.parametrize(
    ("field", "value_template"),
    [
        ("subject", "Hello{bad}Bcc: victim@example.com"),
        ("from_name", "Shop{bad}Bcc: victim@example.com"),
        ("from_email", "news@shop.example.com{bad}Bcc: victim@example.com"),
        ("reply_to", "help@shop.example.com{bad}Bcc: victim@example.com"),
    ],
)
def test_header_injection_refused_naming_the_field(
    make_renderer, campaign, field, value_template, bad
) -> None:
    campaign[field] = value_template.format(bad=bad)
    with pytest.raises(ValidationError) as caught:
        check_sender(campaign)
    assert caught.value.errors[0]["field"] == field
    with pytest.raises(ValidationError) as caught:
        make_renderer(campaign)
    assert caught.value.errors[0]["field"] == field


@pytest.mark.parametrize("bad", ["\r", "\n", "\0"])
def test_custom_header_injection_refused(make_renderer, campaign, bad) -> None:
    for headers in ({"X-Tag": f"a{bad}Bcc: v@example.com"}, {f"X-Tag{bad}Bcc": "a"}):
        campaign["headers"] = headers
        with pytest.raises(ValidationError) as caught:
            make_renderer(campaign)
        assert caught.value.errors[0]["field"].startswith("headers.X-Tag")


def test_custom_header_rules(make_renderer, campaign) -> None:
    for headers, message in (
        ({"X Bad": "a"}, "printable ASCII"),
        ({"Bad:Name": "a"}, "printable ASCII"),
        ({"Subject": "a"}, "set by SwiftMail"),
        ({"list-unsubscribe": "a"}, "set by SwiftMail"),
        ({"X-Number": 3}, "must be strings"),
    ):
        campaign["headers"] = headers
        with pytest.raises(ValidationError) as caught:
            make_renderer(campaign)
        assert message in caught.value.detail


def test_subject_template_with_line_break_refused_at_save() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template("Hi\nBcc: x@example.com", "<p>x</p>")
    assert caught.value.errors[0]["field"] == "subject"


def test_subject_rendered_from_attribute_with_line_break_is_refused(
    make_renderer, campaign, contact
) -> None:
    contact["attributes"]["first_name"] = "Eve\r\nBcc: victim@example.com"
    renderer = make_renderer(campaign)
    with pytest.raises(ValidationError) as caught:
        renderer.render(1, contact)
    assert caught.value.errors[0]["field"] == "subject"


def test_recipient_address_is_validated(make_renderer, campaign, contact) -> None:
    contact["email"] = "alice@example.org\r\nBcc: victim@example.com"
    with pytest.raises(ValidationError) as caught:
        make_renderer(campaign).render(1, contact)
    assert caught.value.errors[0]["field"] == "email"


def test_non_ascii_and_special_names_are_encoded(make_renderer, campaign, contact) -> None:
    campaign["from_name"] = 'Zoë "Boutique", Paris'
    campaign["subject"] = "Ünïcödé offer for {{ contact.first_name }} " + "long words " * 12
    campaign["reply_to"] = "Service Client <service@shop.example.com>"
    campaign["headers"] = {"X-Note": "café"}
    raw = make_renderer(campaign).render(1, contact).raw
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    lines = head.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    from_to_subject = head.split(b"From: ", 1)[1].split(b"\r\nDate:", 1)[0]
    assert all(len(line) <= 78 for line in from_to_subject.split(b"\r\n"))
    parsed = _parse(raw)
    assert parsed["From"].addresses[0].display_name == 'Zoë "Boutique", Paris'
    assert parsed["From"].addresses[0].addr_spec == "news@shop.example.com"
    assert str(parsed["Subject"]) == "Ünïcödé offer for Alice " + "long words " * 12
    assert parsed["Reply-To"].addresses[0].addr_spec == "service@shop.example.com"
    assert str(parsed["X-Note"]) == "café"


def test_long_ascii_subject_is_folded_and_round_trips(make_renderer, campaign, contact) -> None:
    subject = " ".join(f"word{n}" for n in range(40))
    campaign["subject"] = subject
    raw = make_renderer(campaign).render(1, contact).raw
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    subject_lines = head.split("Subject: ", 1)[1].split("\r\nDate:", 1)[0].split("\r\n")
    assert len(subject_lines) > 1 and all(len(line) <= 78 for line in subject_lines)
    assert str(_parse(raw)["Subject"]) == subject


def test_list_unsubscribe_headers_are_rfc8058_shaped(
    make_renderer, campaign, contact, tenant
) -> None:
    list_id = uuid.uuid4()
    parsed = _parse(make_renderer(campaign).render(5, contact, list_id).raw)
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    value = str(parsed["List-Unsubscribe"])
    https_part, mailto_part = (part.strip() for part in value.split(","))
    assert https_part.startswith("<https://mail.swiftmail.test/u/") and https_part.endswith(">")
    assert mailto_part.startswith("<mailto:unsubscribe@bounces.shop.example.com?subject=")
    token = https_part[1:-1].rsplit("/", 1)[1]
    assert tokens.read_unsubscribe_token(SECRET, token) == tokens.UnsubscribeToken(
        tenant["id"], contact["id"], list_id
    )
    assert mailto_part.endswith(f"unsubscribe-{token}>")
    # The visible link in the body is the same URL.
    assert https_part[1:-1] in parsed.get_body(("html",)).get_content()


def test_message_id_derived_from_ledger_row_and_stable(
    make_renderer, campaign, contact, tenant
) -> None:
    renderer = make_renderer(campaign)
    first = renderer.render(12345, contact)
    again = make_renderer(campaign).render(12345, contact)
    other = renderer.render(12346, contact)
    assert first.message_id == again.message_id == (
        f"<12345.{tenant['id'].hex[:12]}@shop.example.com>"
    )
    assert other.message_id != first.message_id
    assert str(_parse(first.raw)["Message-ID"]) == first.message_id


def test_other_headers(make_renderer, campaign, contact, tenant) -> None:
    rendered = make_renderer(campaign).render(9, contact)
    parsed = _parse(rendered.raw)
    assert str(parsed["To"]) == "alice@example.org" == rendered.recipient
    assert parsed["Date"].datetime is not None
    assert str(parsed["Feedback-ID"]) == (
        f"{campaign['id'].hex[:16]}:{tenant['id'].hex[:16]}:campaign:swiftmail"
    )
    assert str(parsed["X-Campaign-Tag"]) == "autumn"
    assert str(parsed["MIME-Version"]) == "1.0"
    assert parse_verp(rendered.envelope_from, SECRET).ledger_id == 9


def test_verp_round_trip_and_tampering() -> None:
    tenant_id = uuid.uuid4()
    address = verp_return_path("bounces.example.com", tenant_id, 987654321, SECRET)
    local, domain = address.split("@")
    assert domain == "bounces.example.com" and len(local) <= 64 and local == local.lower()
    found = parse_verp(address, SECRET)
    assert (found.tenant_id, found.ledger_id) == (tenant_id, 987654321)
    assert parse_verp(address.upper(), SECRET).ledger_id == 987654321  # case-insensitive
    assert parse_verp(f"<{address}>", SECRET).ledger_id == 987654321
    for position in range(2, len(local) - 1):  # the last character carries spare bits
        replacement = "a" if local[position] != "a" else "b"
        with pytest.raises(ValidationError):
            parse_verp(local[:position] + replacement + local[position + 1 :] + "@x", SECRET)
    for bad in (local[:-1] + "@x", local + "a@x", "postmaster@x", "", "b+@x", local[1:] + "@x"):
        with pytest.raises(ValidationError):
            parse_verp(bad, SECRET)
    with pytest.raises(ValidationError):
        parse_verp(address, "another-secret-key-of-32-characters!!")


def test_verp_is_the_relays_wire_format() -> None:
    """The relay's bounce listener must accept what the renderer writes."""
    relay_verp = pytest.importorskip("swiftmail_relay.verp")
    tenant_id = uuid.uuid4()
    mine = verp_return_path("b.example.com", tenant_id, 42, SECRET)
    assert relay_verp.decode(SECRET, mine) == (tenant_id, 42)
    assert relay_verp.encode(SECRET, tenant_id, 42, "b.example.com") == mine
    theirs = relay_verp.encode(SECRET, tenant_id, None, "b.example.com")
    assert parse_verp(theirs, SECRET).ledger_id is None


def test_one_very_long_word_still_keeps_header_lines_short(make_renderer, campaign, contact) -> None:
    campaign["subject"] = "x" * 2000
    raw = make_renderer(campaign).render(1, contact).raw
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert str(_parse(raw)["Subject"]) == "x" * 2000


def test_internationalised_domains_become_ascii(make_renderer, campaign, contact, sending_domain) -> None:
    sending_domain.update(
        domain="bücher.example", return_path_domain="", tracking_domain="klick.bücher.example"
    )
    campaign["from_email"] = "news@bücher.example"
    rendered = make_renderer(campaign).render(4, contact)
    assert rendered.raw.isascii()
    assert rendered.message_id.endswith("@xn--bcher-kva.example>")
    assert rendered.envelope_from.endswith("@xn--bcher-kva.example")
    assert "https://klick.xn--bcher-kva.example/u/" in str(_parse(rendered.raw)["List-Unsubscribe"])
