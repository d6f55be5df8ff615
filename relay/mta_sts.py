"""MTA-STS (RFC 8461): discover, fetch, parse and cache a domain's policy.

Discovery is the ``_mta-sts.<domain>`` TXT record (``v=STSv1; id=...``); the
policy is fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
with a verified certificate, no redirects, a size cap and a timeout. The
policy host is resolved with the relay's resolver and connected to only at
addresses the relay's address policy allows (``allow_networks``), exactly as
an MX would be. A cached policy is used until its ``max_age``; it is
refetched when the TXT ``id`` changes, and kept when a refetch fails
(§5.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog
import urllib3

log = structlog.get_logger("swiftmail.relay.mta_sts")
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_CAP = 31557600
ABSENT_SECONDS = 300.0
RECHECK_SECONDS = 300.0  # a cached policy's TXT id is looked up again after this  # a domain without the TXT record is asked again after this


@dataclasses.dataclass(frozen=True)
class StsPolicy:
    """A parsed MTA-STS policy."""

    domain: str
    policy_id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    text: str = ""

    def mx_matches(self, host: str) -> bool:
        """Tell whether an MX host name matches one of the policy's ``mx`` patterns."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                # A wildcard covers exactly one leftmost label (§4.1).
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def strings(self) -> list[str]:
        """Return the policy as the TLS-RPT ``policy-string`` lines."""
        return [line for line in self.text.splitlines() if line.strip()]


class PolicyError(ValueError):
    """A policy text or TXT record that does not parse."""


def parse_txt(value: str) -> str | None:
    """Return the ``id`` of a ``v=STSv1`` TXT record, or None if it is not one."""
    fields = dict(part.strip().partition("=")[::2] for part in value.split(";") if part.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    if not policy_id or not policy_id.isalnum() or len(policy_id) > 32:
        raise PolicyError(f"MTA-STS TXT record has no valid id: {value!r}")
    return policy_id


def parse_policy(domain: str, policy_id: str, text: str) -> StsPolicy:
    """Parse the body of an ``mta-sts.txt`` file; raise PolicyError naming the field."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"MTA-STS policy line without a colon: {line!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("MTA-STS policy 'version' must be STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"MTA-STS policy 'mode' is invalid: {mode!r}")
    try:
        max_age = min(int((fields.get("max_age") or [""])[0]), MAX_AGE_CAP)
    except ValueError:
        raise PolicyError("MTA-STS policy 'max_age' must be a number of seconds") from None
    mx = tuple(p.lower().rstrip(".") for p in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("MTA-STS policy has no 'mx' pattern")
    return StsPolicy(domain, policy_id, mode, mx, max_age, text)


@dataclasses.dataclass
class _Cached:
    policy: StsPolicy
    expires: float
    checked: float  # when the TXT id was last looked up


class StsFetcher:
    """Look up, fetch and cache MTA-STS policies."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        address_allowed: Callable[[str], bool],
        *,
        port: int = 443,
        ca_file: str = "",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.address_allowed = address_allowed
        self.port = port
        self.ca_file = ca_file
        self.timeout = timeout
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[StsPolicy | None]] = {}
        self._absent: dict[str, float] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        """Return the domain's current policy, or None when it publishes none."""
        domain = domain.lower().rstrip(".")
        # Fast path, no task and no DNS: a policy whose TXT id was checked
        # recently, or a domain known to publish none.
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires > now and cached.checked + RECHECK_SECONDS > now:
            return cached.policy
        if cached is None and self._absent.get(domain, 0.0) > now:
            return None
        pending = self._inflight.get(domain)
        if pending is None:
            pending = asyncio.ensure_future(self._policy(domain))
            self._inflight[domain] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(domain, None))
        return await asyncio.shield(pending)

    async def _policy(self, domain: str) -> StsPolicy | None:
        cached = self._cache.get(domain)
        now = self.clock()
        if cached is None and self._absent.get(domain, 0.0) > now:
            return None
        try:
            policy_id = await self._txt_id(domain)
        except (PolicyError, dns.exception.DNSException) as ex:
            log.info("mta_sts_txt_failed", domain=domain, error=str(ex))
            policy_id = cached.policy.policy_id if cached else None
        if policy_id is None:
            # No TXT: a cached unexpired policy still applies (§3.3).
            if cached and cached.expires > now:
                return cached.policy
            self._absent[domain] = now + ABSENT_SECONDS
            return None
        if cached and cached.expires > now and cached.policy.policy_id == policy_id:
            cached.checked = now
            return cached.policy
        try:
            text = await asyncio.to_thread(self._fetch, domain)
            policy = parse_policy(domain, policy_id, text)
        except (PolicyError, OSError, urllib3.exceptions.HTTPError, ssl.SSLError,
                dns.exception.DNSException) as ex:
            log.warning("mta_sts_fetch_failed", domain=domain, error=str(ex))
            return cached.policy if cached and cached.expires > now else None
        self._cache[domain] = _Cached(policy, now + policy.max_age, now)
        return policy

    async def _txt_id(self, domain: str) -> str | None:
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        ids = [parse_txt(b"".join(r.strings).decode("ascii", "replace")) for r in answer]
        found = [i for i in ids if i]
        if len(found) != 1:
            return None  # none or several STSv1 records: treated as no policy (§3.1)
        return found[0]

    def _fetch(self, domain: str) -> str:
        """Fetch the policy body over HTTPS at an allowed address (runs in a thread)."""
        host = f"mta-sts.{domain}"
        answer = dns.resolver.Resolver(configure=False)
        answer.nameservers = list(self.resolver.nameservers)
        answer.port = self.resolver.port
        answer.lifetime = self.timeout
        addresses = [r.address for r in answer.resolve(host, "A", search=False)]
        allowed = [a for a in addresses if self.address_allowed(a)]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses the relay may not use")
        context = ssl.create_default_context(cafile=self.ca_file or None)
        pool = urllib3.HTTPSConnectionPool(
            allowed[0], port=self.port, ssl_context=context, server_hostname=host,
            assert_hostname=host, timeout=urllib3.Timeout(total=self.timeout), retries=False,
            maxsize=1)
        try:
            response = pool.urlopen("GET", "/.well-known/mta-sts.txt", headers={"Host": host},
                                    redirect=False, preload_content=False)
            try:
                if response.status != 200:
                    raise OSError(f"{host} answered HTTP {response.status}")
                body = response.read(MAX_POLICY_BYTES + 1)
            finally:
                response.release_conn()
        finally:
            pool.close()
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyError(f"{host} policy is larger than {MAX_POLICY_BYTES} bytes")
        return body.decode("utf-8", "replace")
