"""DANE for SMTP (RFC 7672): TLSA lookup and certificate matching.

TLSA records of ``_<port>._tcp.<mx host>`` count only when the answer carries
the AD bit from the configured resolver (``dns_nameservers``): the relay does
not validate DNSSEC itself, it trusts that resolver (run it on the same host
or over a trusted link). Usable records are DANE-EE (3 x x), matched against
the server's own certificate with no name or expiry check, and DANE-TA
(2 x x), a trust anchor in the presented chain that must issue a chain valid
for the MX host name. PKIX-TA/EE (0, 1) are unusable for SMTP (§3.1.3).
"""

from __future__ import annotations

import dataclasses
import hashlib

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification

DANE_TA = 2
DANE_EE = 3


@dataclasses.dataclass(frozen=True)
class Tlsa:
    """One TLSA record: usage, selector, matching type and association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def text(self) -> str:
        """Return the record in presentation form (for reports)."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


class DaneLookupFailed(Exception):
    """The TLSA lookup failed transiently: the MX host must not be tried in clear."""


def _selected(certificate: x509.Certificate, selector: int) -> bytes:
    if selector == 0:
        return certificate.public_bytes(Encoding.DER)
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _matches(record: Tlsa, certificate: x509.Certificate) -> bool:
    content = _selected(certificate, record.selector)
    if record.mtype == 0:
        return content == record.data
    if record.mtype == 1:
        return hashlib.sha256(content).digest() == record.data
    if record.mtype == 2:
        return hashlib.sha512(content).digest() == record.data
    return False


def usable(records: list[Tlsa]) -> list[Tlsa]:
    """Return the records an SMTP client may use (DANE-TA and DANE-EE)."""
    return [r for r in records if r.usage in (DANE_TA, DANE_EE) and r.selector in (0, 1)
            and r.mtype in (0, 1, 2)]


def verify_chain(records: list[Tlsa], chain_der: list[bytes], host: str) -> str | None:
    """Return None when the chain satisfies a record, else an RFC 8460 result type."""
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        return "certificate-not-trusted"
    if not chain:
        return "certificate-not-trusted"
    leaf = chain[0]
    for record in records:
        if record.usage == DANE_EE and _matches(record, leaf):
            return None
    for record in records:
        if record.usage != DANE_TA:
            continue
        for anchor in chain[1:] or chain:
            if not _matches(record, anchor):
                continue
            try:
                verifier = (verification.PolicyBuilder()
                            .store(verification.Store([anchor]))
                            .build_server_verifier(verification.DNSName(host)))
                verifier.verify(leaf, [c for c in chain[1:] if c is not anchor])
                return None
            except (verification.VerificationError, ValueError):
                continue
    return "tlsa-invalid"


async def lookup(resolver: dns.asyncresolver.Resolver, host: str, port: int) -> list[Tlsa]:
    """Return the DNSSEC-authenticated usable TLSA records of ``host`` (may be empty)."""
    name = f"_{port}._tcp.{host}"
    try:
        answer = await resolver.resolve(name, "TLSA", search=False, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as ex:
        raise DaneLookupFailed(f"TLSA lookup of {name} failed: {type(ex).__name__}") from None
    if answer.rrset is None or not answer.response.flags & dns.flags.AD:
        return []
    return usable([Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer])
