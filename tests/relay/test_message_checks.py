"""What a submitted message must be, and what the relay adds to it."""

from __future__ import annotations

import pytest
from swiftmail_relay.message_checks import (
    author_domains,
    canonical_line_endings,
    complete_headers,
    from_domain,
    has_long_line,
    header_problem,
)


@pytest.mark.parametrize(("raw", "problem"), [
    (b"From: a@b.example\r\nTo: c@d\r\n\r\nx", None),
    (b"From: a@b.example\nTo: c@d\n\nx", None),
    (b"From: a@b.example\r\nFrom: e@f\r\n\r\nx", "more than one from header"),
    (b"From: a@b.example\nFrom: e@f\r\n\r\nx", "more than one from header"),
    (b"From: a@b.example\r\nSubject: x\rBcc: y\r\n\r\nx", "bare CR in the header"),
    (b"From: a@b.example\r\nnot a header\r\n\r\nx", "malformed header line"),
    (b" folded: first\r\nFrom: a@b.example\r\n\r\nx", "malformed header line"),
    (b"From: a@b.example\r\nTo: c\x00@d\r\n\r\nx", "NUL byte in the header"),
    (b"To: c@d\r\n\r\nFrom: a@b.example\r\n", "exactly one From header is required"),
    (b"From: a@b.example, e@f.example\r\n\r\nx",
     "a From header with more than one mailbox needs a Sender header"),
    (b"From: a@b.example, e@f.example\r\nSender: a@b.example\r\n\r\nx", None),
    (b"From: a@b.example\r\nSender: a@b.example, e@f.example\r\n\r\nx",
     "a Sender header must name exactly one mailbox"),
    (b"From: undisclosed-recipients:;\r\n\r\nx", "no usable From address"),
    (b"From: a@b.example\r\n\r\nbody with a bare\rCR and a bare\nLF is fine", None),
])
def test_header_problem(raw: bytes, problem: str | None) -> None:
    assert header_problem(raw) == problem


def test_author_domains_lists_every_from_mailbox_and_the_sender() -> None:
    raw = b"From: A <a@One.example>, b@two.example\r\nSender: s@three.example\r\n\r\nx"
    assert author_domains(raw) == ["one.example", "two.example", "three.example"]
    assert author_domains(b'From: "a@evil.example" <a@good.example>\r\n\r\nx') == ["good.example"]


def test_canonical_line_endings() -> None:
    assert canonical_line_endings(b"a\r\nb\r\n") == b"a\r\nb\r\n"
    assert canonical_line_endings(b"a\nb\rc\r\r\nd") == b"a\r\nb\r\nc\r\n\r\nd"


def test_long_lines() -> None:
    assert not has_long_line(b"x" * 998 + b"\r\n" + b"y" * 998)
    assert has_long_line(b"ok\r\n" + b"x" * 999 + b"\r\n")


def test_complete_headers_adds_what_is_missing_and_drops_bcc() -> None:
    raw = (b"From: a@b.example\r\nBcc: x@y.example,\r\n z@y.example\r\nTo: c@d.example\r\n"
           b"\r\nBcc: in the body stays\r\n")
    done = complete_headers(raw, trace=b"Received: by relay.test\r\n", message_id_domain="b.example")
    headers, body = done.split(b"\r\n\r\n", 1)
    lines = headers.split(b"\r\n")
    assert lines[0] == b"Received: by relay.test"
    assert lines[1:3] == [b"From: a@b.example", b"To: c@d.example"]
    assert lines[3].startswith(b"Date: ") and lines[4].startswith(b"Message-ID: <")
    assert lines[4].endswith(b"@b.example>") and len(lines) == 5
    assert body == b"Bcc: in the body stays\r\n"
    kept = complete_headers(b"From: a@b\r\nDate: x\r\nMessage-ID: <1@b>\r\n\r\nbody",
                            trace=b"", message_id_domain="b")
    assert kept == b"From: a@b\r\nDate: x\r\nMessage-ID: <1@b>\r\n\r\nbody"


def test_utf8_headers_read_the_same_to_both_parsers() -> None:
    # RFC 6532 headers (SMTPUTF8 mail) must not look ambiguous.
    raw = "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nx".encode()
    assert header_problem(raw) is None
    assert author_domains(raw) == ["xn--bcher-kva.example"]


def test_a_unicode_from_domain_is_checked_in_its_stored_ascii_form() -> None:
    # Sending domains are stored as A-labels: a From written in U-labels is the same domain.
    raw = "From: jörg@Bücher.example\r\n\r\nx".encode()
    assert author_domains(raw) == ["xn--bcher-kva.example"]
    assert from_domain(raw) == "xn--bcher-kva.example"
    assert header_problem("From: a@b\u00fc..example\r\n\r\nx".encode()) is not None
