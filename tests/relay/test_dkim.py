"""DKIM signatures verify with dkimpy's verifier against the loopback DNS."""

from __future__ import annotations

import uuid

import dkim as dkimpy
import pytest
from swiftmail_relay import dkim

from tests.relay.conftest import txt_strings

MESSAGE = (
    b"From: Sender <news@{domain}>\r\n"
    b"To: someone@example.com\r\n"
    b"Subject:   Hello   world \r\n"
    b"Date: Fri, 27 Nov 2026 20:00:00 +0000\r\n"
    b"Message-ID: <1@{domain}>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://u.example/x>,\r\n <mailto:u@example.com>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"\r\n"
    b"<p>Hi \t there  </p>\r\n\r\n\r\n"
)


def _publish(dns_server, domain: str, selector: str, public: str, kind: str = "rsa") -> None:  # type: ignore[no-untyped-def]
    dns_server.add(f"{selector}._domainkey.{domain}", "TXT", txt_strings(f"v=DKIM1; k={kind}; p={public}"))


def test_rsa_signature_verifies_with_dkimpy(dns_server, rsa_key, dkim_dnsfunc) -> None:  # type: ignore[no-untyped-def]
    domain = f"d{uuid.uuid4().hex[:8]}.example"
    _publish(dns_server, domain, "sm1", rsa_key[1])
    raw = MESSAGE.replace(b"{domain}", domain.encode())
    signed = dkim.sign(raw, [dkim.load_key(domain, "sm1", rsa_key[0])])
    assert signed.endswith(raw)
    assert b" l=" not in signed.split(b"\r\n\r\n")[0]
    assert dkimpy.verify(signed, dnsfunc=dkim_dnsfunc)


def test_oversigning_rejects_an_added_header(dns_server, rsa_key, dkim_dnsfunc) -> None:  # type: ignore[no-untyped-def]
    domain = f"d{uuid.uuid4().hex[:8]}.example"
    _publish(dns_server, domain, "sm1", rsa_key[1])
    raw = MESSAGE.replace(b"{domain}", domain.encode())
    signed = dkim.sign(raw, [dkim.load_key(domain, "sm1", rsa_key[0])])
    tampered = signed.replace(b"\r\n\r\n", b"\r\nSubject: changed\r\n\r\n", 1)
    assert not dkimpy.verify(tampered, dnsfunc=dkim_dnsfunc)
    body_changed = signed[:-10] + b"XX" + signed[-8:]
    assert not dkimpy.verify(body_changed, dnsfunc=dkim_dnsfunc)


def test_ed25519_second_signature_verifies(dns_server, rsa_key, ed25519_key, dkim_dnsfunc) -> None:  # type: ignore[no-untyped-def]
    domain = f"d{uuid.uuid4().hex[:8]}.example"
    _publish(dns_server, domain, "sm1", rsa_key[1])
    _publish(dns_server, domain, "sm2", ed25519_key[1], kind="ed25519")
    raw = MESSAGE.replace(b"{domain}", domain.encode())
    keys = [dkim.load_key(domain, "sm1", rsa_key[0]), dkim.load_key(domain, "sm2", ed25519_key[0])]
    signed = dkim.sign(raw, keys)
    assert signed.count(b"DKIM-Signature:") == 2
    verifier = dkimpy.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dkim_dnsfunc)
    assert verifier.verify(idx=1, dnsfunc=dkim_dnsfunc)
    assert b"a=ed25519-sha256" in signed


def test_bare_lf_and_empty_body(dns_server, rsa_key, dkim_dnsfunc) -> None:  # type: ignore[no-untyped-def]
    domain = f"d{uuid.uuid4().hex[:8]}.example"
    _publish(dns_server, domain, "sm1", rsa_key[1])
    raw = f"From: a@{domain}\nTo: b@example.com\nSubject: x\n\n".encode()
    signed = dkim.sign(raw, [dkim.load_key(domain, "sm1", rsa_key[0])])
    assert dkimpy.verify(signed, dnsfunc=dkim_dnsfunc)


def test_relaxed_body_matches_dkimpy() -> None:
    from dkim.canonicalization import Relaxed

    for body in (b"", b"\r\n", b"a  b \t\r\n\r\n", b"x\r\n \r\ny", b"line \r\n\r\n\r\nend  ",
                 b"\ta\t \t b\t\r\n  \r\n", b"one two three\r\n", b"bare\nlf \n\n"):
        assert dkim.relaxed_body(body) == Relaxed.canonicalize_body(dkim.to_crlf(body))


def test_relaxed_body_of_a_crlf_body_skips_no_rule() -> None:
    """``crlf=True`` (the caller made line endings CRLF) canonicalises exactly the same."""
    for body in (b"", b"\r\n", b"a  b \t\r\n\r\n", b"x\r\n \r\ny", b"line \r\n\r\n\r\nend  ",
                 b"\ta\t \t b\t\r\n  \r\n", b"one two three\r\n"):
        assert dkim.relaxed_body(body, crlf=True) == dkim.relaxed_body(body)


def test_handoff_signs_once_canonical_and_verifies(dns_server, rsa_key, dkim_dnsfunc, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The hand-off's one canonical pass: bare LF and bare CR become CRLF, then it verifies."""
    import types

    from swiftmail_relay import handoff
    from swiftmail_relay.message_checks import canonical_line_endings, from_domain

    domain = f"d{uuid.uuid4().hex[:8]}.example"
    _publish(dns_server, domain, "sm1", rsa_key[1])
    raw = canonical_line_endings(
        MESSAGE.replace(b"{domain}", domain.encode()).replace(b"\r\n\r\n", b"\n\n", 1)
        + b"bare\ncr\rend \n")
    assert from_domain(raw) == domain
    keys = [dkim.load_key(domain, "sm1", rsa_key[0])]
    store = types.SimpleNamespace(signing_keys=lambda tenant_id, name: keys)
    monkeypatch.setattr(handoff, "_keys", lambda secret, ed25519: store)
    signed = handoff.sign_canonical(
        types.SimpleNamespace(secret_key="x"), types.SimpleNamespace(dkim_ed25519=False),  # type: ignore[arg-type]
        raw, uuid.uuid4(), domain)
    stamp = int(signed.split(b"t=", 1)[1].split(b";", 1)[0])
    assert signed == dkim.sign(raw, keys, timestamp=stamp)
    assert dkimpy.verify(signed, dnsfunc=dkim_dnsfunc)


def test_handoff_checks_line_endings_unless_the_renderer_vouches(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``OutboundMessage.crlf`` (the renderer's own bytes) skips the pass; otherwise it runs."""
    import types

    from swiftmail_relay import handoff

    from swiftmail_core.transports import OutboundMessage

    settings = types.SimpleNamespace(secret_key="")
    config = types.SimpleNamespace(hostname="relay.test", dkim_ed25519=False)
    raw = b"From: a@example.com\nTo: b@example.net\n\nbare\nlf\r\n"

    def message(body: bytes, crlf: bool) -> OutboundMessage:
        return OutboundMessage(ledger_id=1, tenant_id=uuid.uuid4(), envelope_from="a@example.com",
                               recipient="b@example.net", raw=body, message_id="<1@x>", crlf=crlf)

    checked, prepared = handoff.prepare_message(settings, config, message(raw, False), sign=False)  # type: ignore[arg-type]
    assert prepared.endswith(b"From: a@example.com\r\nTo: b@example.net\r\n\r\nbare\r\nlf\r\n")
    checked_bytes = prepared
    crlf = raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    monkeypatch.setattr(handoff, "canonical_line_endings", lambda data: pytest.fail("checked"))
    envelope, prepared = handoff.prepare_message(settings, config, message(crlf, True), sign=False)  # type: ignore[arg-type]
    assert prepared.endswith(crlf) and envelope.sender_domain == "example.com"
    # The spool's envelope says so (delivery then skips its own check): true of either input.
    assert envelope.crlf and _crlf_throughout(prepared)
    assert checked.crlf and _crlf_throughout(checked_bytes)


def _crlf_throughout(data: bytes) -> bool:
    return data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
