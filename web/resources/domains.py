"""``/v1/sending-domains``: DKIM keys, the DNS records to publish, verification.

Creating a domain generates an RSA-2048 DKIM key pair; the private key is
stored encrypted (``swiftmail_core.crypto.encrypt``) and never returned. The
response lists the exact records to publish. ``POST .../verify`` looks each
record up with real DNS queries (``settings.dns_nameservers`` /
``dns_port``, else the system resolver) and reports each record's state;
the domain is verified when DKIM, SPF and the return path all match (DMARC
is reported, recommended, not required).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import dns.exception
import dns.resolver
import falcon
from peewee import IntegrityError
from swiftmail_web import access
from swiftmail_web.config import DnsTargets, WebConfig
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    NULLABLE_TIMESTAMP,
    OBJECT,
    STRING,
    TIMESTAMP,
    UUID,
    get_or_404,
    principal,
)

from swiftmail_core import crypto
from swiftmail_core.db import tenant_tx
from swiftmail_core.dkim_keys import generate_dkim_key
from swiftmail_core.errors import ConflictError, ValidationError
from swiftmail_core.models import Campaign, SendingDomain, utcnow
from swiftmail_core.rendering.headers import ascii_domain
from swiftmail_core.settings import Settings
from swiftmail_core.timestamps import rfc3339

#: A host name in ASCII: labels of letters, digits and inner hyphens; the top
#: label letters, or an IDNA A-label (``xn--p1ai`` for ``рф``).
_HOSTNAME = re.compile(r"^(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                       r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
FIELDS = Fields(
    domain=Field("string", required=True, max_length=253,
                 description="The From domain, e.g. news.example.com; Unicode labels "
                             "(bücher.example) are stored in ASCII (xn--bcher-kva.example)."),
    return_path_domain=Field("string", max_length=253,
                             description="Bounce (envelope sender) domain; default bounces.DOMAIN."),
    tracking_domain=Field("string", max_length=253),
)
RECORD = obj({"purpose": STRING, "type": STRING, "name": STRING, "value": STRING,
              "required": {"type": "boolean"}})
SCHEMA = obj({
    "object": {"type": "string", "const": "sending_domain"}, "id": UUID, "domain": STRING,
    "dkim_selector": STRING, "return_path_domain": STRING, "tracking_domain": STRING,
    "dns_records": {"type": "array", "items": RECORD},
    "warnings": {"type": "array", "items": STRING}, "verification": OBJECT,
    "verified_at": NULLABLE_TIMESTAMP, "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})


def _hostname(field: str, value: str) -> str:
    """Return the domain in ASCII lower case, or raise naming ``field``.

    Unicode labels (IDN) become their IDNA A-labels, exactly as a From
    domain does (``rendering.headers.ascii_domain``, the relay's
    ``message_checks.ascii_domain``), so a From header written with U-labels
    finds its sending domain.
    """
    refusal = "must be a domain name like news.example.com (or bücher.example)"
    try:
        value = ascii_domain(field, value.strip().rstrip("."))
    except ValidationError as ex:
        raise ValidationError.for_field(field, refusal) from ex
    if not _HOSTNAME.match(value):
        raise ValidationError.for_field(field, refusal)
    try:
        value.encode("ascii").decode("idna")  # an A-label must decode (xn--zz does not)
    except UnicodeError as ex:
        raise ValidationError.for_field(field, f"{refusal}: {value!r} is not valid IDNA") from ex
    return value


def dns_records(row: SendingDomain, targets: DnsTargets) -> list[dict[str, Any]]:
    """Return the exact records the tenant must publish for ``row``."""
    spf_include = targets.spf_include
    return_path_target = targets.return_path_target
    return [
        {"purpose": "dkim", "type": "TXT", "name": f"{row.dkim_selector}._domainkey.{row.domain}",
         "value": f"v=DKIM1; k=rsa; p={row.dkim_public_key}", "required": True},
        {"purpose": "spf", "type": "TXT", "name": row.domain,
         "value": f"v=spf1 include:{spf_include} ~all", "required": True},
        {"purpose": "dmarc", "type": "TXT", "name": f"_dmarc.{row.domain}",
         "value": f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{row.domain}", "required": False},
        {"purpose": "return_path", "type": "CNAME", "name": row.return_path_domain,
         "value": return_path_target, "required": True},
    ]


def serialize(row: SendingDomain, targets: DnsTargets) -> dict[str, Any]:
    """Return the API shape of a domain (never a private key)."""
    return {
        "object": "sending_domain", "id": row.id, "domain": row.domain,
        "dkim_selector": row.dkim_selector, "return_path_domain": row.return_path_domain,
        "tracking_domain": row.tracking_domain,
        "dns_records": dns_records(row, targets), "warnings": list(targets.warnings),
        "verification": row.verification or {}, "verified_at": row.verified_at,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


class DnsChecker:
    """Look records up with dnspython, honouring the configured resolvers."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.settings = settings
        self.timeout = timeout

    def _resolver(self) -> dns.resolver.Resolver:
        if self.settings.dns_nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = list(self.settings.dns_nameservers)
            resolver.port = self.settings.dns_port
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = self.timeout
        return resolver

    def lookup(self, name: str, rdtype: str) -> tuple[list[str], str | None]:
        """Return (values, error); NXDOMAIN and no-answer are ([], None)."""
        try:
            answer = self._resolver().resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], None
        except (dns.exception.DNSException, OSError) as ex:
            return [], f"lookup failed: {type(ex).__name__}"
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer], None
        return [r.to_text().rstrip(".").lower() for r in answer], None

    def check(self, record: dict[str, Any]) -> dict[str, Any]:
        """Return the state of one expected record: verified, missing, mismatch or error."""
        found, error = self.lookup(record["name"], record["type"])
        state = {"name": record["name"], "type": record["type"], "expected": record["value"],
                 "found": found[:10]}
        if error:
            return {**state, "state": "error", "detail": error}
        ok = any(_matches(record, value) for value in found)
        return {**state, "state": "verified" if ok else ("mismatch" if found else "missing")}


def _squash(value: str) -> str:
    return re.sub(r"\s+", "", value)


def _matches(record: dict[str, Any], value: str) -> bool:
    purpose, expected = record["purpose"], record["value"]
    if purpose == "dkim":
        tags = dict(part.split("=", 1) for part in _squash(value).split(";") if "=" in part)
        want = _squash(expected).split("p=", 1)[1]
        return tags.get("p") == want and tags.get("k", "rsa") == "rsa"
    if purpose == "spf":
        include = expected.split()[1]
        return value.startswith("v=spf1") and include in value.split()
    if purpose == "dmarc":
        return _squash(value).startswith("v=DMARC1")
    return value.rstrip(".").lower() == expected.rstrip(".").lower()


class DomainsResource:
    """The collection: list and create."""

    tag = "sending-domains"
    policy = {"GET": access.read("domains"), "POST": access.write("domains", role="admin")}

    def __init__(self, settings: Settings, config: WebConfig) -> None:
        self.settings = settings
        self.targets = config.dns_targets(settings.public_url)
        self.docs = {
            "GET": Operation("List sending domains", response=page_of(SCHEMA), paginated=True),
            "POST": Operation("Add a sending domain: generates DKIM, returns DNS records",
                              body=FIELDS, response=SCHEMA, status=201),
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List domains, oldest first."""
        resp.media = paginate(req, SendingDomain.select(), SendingDomain.created_at,
                              SendingDomain.id, lambda r: serialize(r, self.targets))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create the domain with a fresh DKIM key (encrypted at rest)."""
        values = FIELDS.parse(read_body(req))
        domain = _hostname("domain", values["domain"])
        return_path = _hostname("return_path_domain",
                                values.get("return_path_domain") or f"bounces.{domain}")
        tracking = (_hostname("tracking_domain", values["tracking_domain"])
                    if values.get("tracking_domain") else "")
        secret_key = self.settings.require("secret_key")
        pem, public = generate_dkim_key()
        now = utcnow()
        domain_id = uuid.uuid4()
        try:
            SendingDomain.insert(
                tenant_id=principal(req).tenant_id, id=domain_id, domain=domain,
                dkim_selector=f"sm{now:%Y%m}",
                # APPSEC: the private key exists in clear only in this process's memory.
                dkim_private_key_encrypted=crypto.encrypt(secret_key, pem),
                dkim_public_key=public, return_path_domain=return_path,
                tracking_domain=tracking, created_at=now, updated_at=now).execute()
        except IntegrityError as ex:
            raise ConflictError(f"domain {domain!r} is already added") from ex
        row = SendingDomain.get(SendingDomain.id == domain_id)
        resp.status = 201
        resp.media = serialize(row, self.targets)
        resp.set_header("Location", f"/v1/sending-domains/{domain_id}")


class DomainResource:
    """One domain: read, delete."""

    tag = "sending-domains"
    policy = {"GET": access.read("domains"), "DELETE": access.write("domains", role="admin")}

    def __init__(self, settings: Settings, config: WebConfig) -> None:
        self.targets = config.dns_targets(settings.public_url)
        self.docs = {
            "GET": Operation("Get a sending domain and its DNS records", response=SCHEMA),
            "DELETE": Operation("Remove a sending domain", status=204),
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, domain_id: str) -> None:
        """Return one domain."""
        row = get_or_404(SendingDomain.select(), SendingDomain.id, domain_id, "sending domain")
        resp.media = serialize(row, self.targets)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, domain_id: str) -> None:
        """Delete the domain (campaigns using it lose their domain)."""
        row = get_or_404(SendingDomain.select(), SendingDomain.id, domain_id, "sending domain")
        # NOTE: the foreign key cannot SET NULL itself on Citus (migration 0150).
        Campaign.update(sending_domain_id=None).where(
            Campaign.sending_domain_id == row.id).execute()
        SendingDomain.delete().where(SendingDomain.id == row.id).execute()
        resp.status = 204


class DomainVerifyResource:
    """``POST .../verify``: real DNS lookups of every record, state per record."""

    tag = "sending-domains"
    # NOTE: no transaction is held open across DNS lookups (seconds, potentially).
    tenant_transaction = False
    policy = {"POST": access.write("domains", role="admin")}

    def __init__(self, settings: Settings, config: WebConfig) -> None:
        self.targets = config.dns_targets(settings.public_url)
        self.checker = DnsChecker(settings)
        self.docs = {"POST": Operation("Check the domain's DNS records now",
                                       body=Fields(), response=SCHEMA)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, domain_id: str) -> None:
        """Look up each record; mark verified when every required one matches."""
        Fields().parse(read_body(req))
        tenant = principal(req).tenant_id
        with tenant_tx(tenant):
            row = get_or_404(SendingDomain.select(), SendingDomain.id, domain_id,
                             "sending domain")
        records = dns_records(row, self.targets)
        results = {r["purpose"]: self.checker.check(r) for r in records}
        verified = all(results[r["purpose"]]["state"] == "verified"
                       for r in records if r["required"])
        now = utcnow()
        verification = {**(row.verification or {}), "records": results,
                        "checked_at": rfc3339(now)}
        with tenant_tx(tenant):
            (SendingDomain.update(
                verification=verification, updated_at=now,
                verified_at=(row.verified_at or now) if verified else None)
             .where(SendingDomain.id == row.id).execute())
            row = SendingDomain.get(SendingDomain.id == row.id)
        resp.media = serialize(row, self.targets)


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the sending domain routes."""
    settings, config = services["settings"], services["config"]
    return [
        ("/v1/sending-domains", DomainsResource(settings, config)),
        ("/v1/sending-domains/{domain_id}", DomainResource(settings, config)),
        ("/v1/sending-domains/{domain_id}/verify", DomainVerifyResource(settings, config)),
    ]
