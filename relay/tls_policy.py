"""Which TLS an outbound session needs (DANE, MTA-STS, opportunistic) and enforcing it.

Per MX host: DNSSEC-authenticated TLSA records make DANE apply (RFC 7672;
TLS required, certificate matched against TLSA, MTA-STS then ignored for that
host). Otherwise a recipient domain's MTA-STS policy in ``enforce`` mode
(RFC 8461) requires the MX to match a policy pattern and present a
certificate valid for its name; ``testing`` checks the same and only reports.
Without either, TLS stays opportunistic. A failed enforced policy skips the
host (the message is deferred when no host is left); it never falls back to
clear text. Every session under a policy is recorded for TLS-RPT.
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any

import aiosmtplib
import dns.asyncresolver
import dns.flags
import structlog
from swiftmail_relay import dane, metrics
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.mta_sts import StsFetcher, StsPolicy
from swiftmail_relay.mx import MxHost
from swiftmail_relay.tls_report import MetricsOnlyRecorder, TlsRecorder, TlsResult

from swiftmail_core.settings import Settings

log = structlog.get_logger("swiftmail.relay.tls")

PKIX = "pkix"
_ENCODING_DER = getattr(ssl, "ENCODING_DER", 2)  # _ssl.ENCODING_DER before Python 3.13
DANE = "dane"


class TlsPolicyFailed(Exception):
    """An enforced TLS policy failed for one MX host: try the next, never clear text."""

    def __init__(self, policy_type: str, result: str, detail: str) -> None:
        super().__init__(f"{policy_type} {result}: {detail}")
        self.policy_type = policy_type
        self.result = result
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """The TLS requirement for one session to one MX host."""

    policy_type: str  # tlsa | sts | no-policy-found
    domain: str
    enforce: bool = False
    strings: tuple[str, ...] = ()
    tlsa: tuple[dane.Tlsa, ...] = ()
    sts: StsPolicy | None = None

    @property
    def verify_pkix(self) -> bool:
        """Tell whether the certificate must be checked against the web PKI."""
        return self.sts is not None and self.sts.mode in ("enforce", "testing")


def _verify_result(error: BaseException) -> str:
    """Map a certificate verification error to an RFC 8460 result type."""
    code = getattr(error, "verify_code", None)
    message = str(error).lower()
    if code == 62 or "hostname mismatch" in message or "match" in message:
        return "certificate-host-mismatch"
    if code == 10 or "expired" in message:
        return "certificate-expired"
    return "certificate-not-trusted"


def _find_ssl_error(error: BaseException) -> BaseException | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def peer_chain(client: aiosmtplib.SMTP) -> list[bytes]:
    """Return the DER certificates the server presented, leaf first."""
    transport = client.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    if ssl_object is None:
        return []
    inner = getattr(ssl_object, "_sslobj", None)
    chain = getattr(inner, "get_unverified_chain", None) if inner is not None else None
    if chain is not None:
        certificates = chain() or []
        return [c.public_bytes(_ENCODING_DER) for c in certificates]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class TlsPolicies:
    """Resolve, enforce and report outbound TLS policies."""

    def __init__(self, settings: Settings, config: RelayConfig, *,
                 recorder: TlsRecorder | None = None) -> None:
        self.config = config
        self.recorder: TlsRecorder = recorder or MetricsOnlyRecorder()
        # NOTE: DANE trusts the AD bit of the configured resolver; it must
        # validate DNSSEC and be reached over a trusted path (docs/relay.md).
        self.resolver = dns.asyncresolver.Resolver(configure=not settings.dns_nameservers)
        if settings.dns_nameservers:
            self.resolver.nameservers = list(settings.dns_nameservers)
        self.resolver.port = settings.dns_port
        self.resolver.lifetime = config.dns_timeout
        self.resolver.timeout = config.dns_timeout
        self.resolver.use_edns(0, dns.flags.DO, 1232)
        self.resolver.flags = dns.flags.RD | dns.flags.AD
        self.fetcher = StsFetcher(self.resolver, config.address_allowed,
                                  port=config.mta_sts_port, ca_file=config.tls_ca_file,
                                  timeout=config.dns_timeout + config.connect_timeout)
        self._verified_context = ssl.create_default_context(cafile=config.tls_ca_file or None)
        self._open_context = ssl.create_default_context()
        self._open_context.check_hostname = False
        self._open_context.verify_mode = ssl.CERT_NONE

    async def sts(self, domain: str) -> StsPolicy | None:
        """Return the recipient domain's MTA-STS policy (None: none, or disabled)."""
        if not self.config.mta_sts or self.config.relayhost:
            return None
        return await self.fetcher.policy(domain)

    async def for_host(self, domain: str, sts: StsPolicy | None, host: MxHost) -> HostPolicy:
        """Return what a session to ``host`` for ``domain`` requires.

        Raise TlsPolicyFailed when the host may not be used at all (an
        enforced MTA-STS policy it does not match, or a failed TLSA lookup).
        """
        if self.config.dane and not self.config.relayhost:
            try:
                records = await dane.lookup(self.resolver, host.name, self.config.smtp_port)
            except dane.DaneLookupFailed as ex:
                await self._record(HostPolicy("tlsa", domain, True), host.name, "",
                                   "tlsa-invalid")
                raise TlsPolicyFailed("tlsa", "tlsa-invalid", str(ex)) from None
            if records:
                return HostPolicy("tlsa", domain, True, tuple(r.text() for r in records),
                                  tuple(records))
        if sts is None or sts.mode == "none":
            return HostPolicy("no-policy-found", domain)
        policy = HostPolicy("sts", domain, sts.mode == "enforce", tuple(sts.strings()), sts=sts)
        if not sts.mx_matches(host.name):
            await self._record(policy, host.name, "", "validation-failure")
            if policy.enforce:
                raise TlsPolicyFailed("sts", "validation-failure",
                                      f"MX {host.name} matches no mx pattern of the policy")
            return HostPolicy("no-policy-found", domain)
        return policy

    async def starttls(self, client: aiosmtplib.SMTP, host: MxHost, address: str,
                       policy: HostPolicy) -> str:
        """Run STARTTLS as ``policy`` requires; return the verification level ('' when none).

        Raise TlsPolicyFailed when an enforced policy fails; a ``testing``
        failure is recorded and answered with an unverified session.
        """
        if not client.supports_extension("starttls"):
            await self._fail(policy, host, address, "starttls-not-supported",
                             "STARTTLS not offered")
            return ""
        context = self._verified_context if policy.verify_pkix else self._open_context
        try:
            await client.starttls(server_hostname=host.name, tls_context=context)
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as ex:
            cause = _find_ssl_error(ex)
            if policy.verify_pkix and isinstance(cause, ssl.SSLCertVerificationError):
                await self._fail(policy, host, address, _verify_result(cause), str(cause))
                raise RetryUnverified() from ex
            await self._fail(policy, host, address, "validation-failure", str(ex))
            raise
        await client.ehlo()
        if policy.tlsa:
            result = dane.verify_chain(list(policy.tlsa), peer_chain(client), host.name)
            if result is not None:
                client.close()
                await self._fail(policy, host, address, result,
                                 "certificate matches no TLSA record")
                return ""
            await self._record(policy, host.name, address, "success")
            return DANE
        if policy.verify_pkix:
            await self._record(policy, host.name, address, "success")
            return PKIX
        return ""

    async def _fail(self, policy: HostPolicy, host: MxHost, address: str, result: str,
                    detail: str) -> None:
        await self._record(policy, host.name, address, result)
        if policy.enforce:
            metrics.TLS_POLICY_DEFERRALS.labels(policy=policy.policy_type).inc()
            log.warning("tls_policy_failed", policy=policy.policy_type, domain=policy.domain,
                        mx=host.name, address=address, result=result, detail=detail)
            raise TlsPolicyFailed(policy.policy_type, result, detail)
        log.info("tls_policy_report_only", policy=policy.policy_type, domain=policy.domain,
                 mx=host.name, result=result, detail=detail)

    async def _record(self, policy: HostPolicy, mx_host: str, address: str, result: str) -> None:
        if policy.policy_type == "no-policy-found":
            return
        try:
            await self.recorder.record(TlsResult(policy.domain, policy.policy_type,
                                                 policy.strings, mx_host, address, result))
        except Exception as ex:  # reporting never stops delivery
            log.warning("tls_report_record_failed", error=str(ex))

    def acceptable(self, connection: Any, sts: StsPolicy | None) -> bool:
        """Tell whether a pooled connection satisfies the domain's MTA-STS policy."""
        if sts is None or sts.mode != "enforce" or connection.verified == DANE:
            return True
        return connection.verified == PKIX and sts.mx_matches(connection.host.name)


class RetryUnverified(Exception):
    """A report-only (testing) policy failed verification: reconnect unverified."""
