"""TLS-RPT (RFC 8460): count outbound TLS outcomes and build the daily report.

Every session to a destination with a TLS policy (MTA-STS or DANE) is
counted per UTC day, per policy domain, per policy type and per result
(``success`` or an RFC 8460 result type such as ``certificate-host-mismatch``
or ``starttls-not-supported``), in Redis hashes that live eight days.
Sessions without a policy are counted as ``no-policy-found``. Counters also
feed the ``swiftmail_relay_tls_sessions_total`` metric.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Protocol

from swiftmail_relay import metrics

KEEP_SECONDS = 8 * 86400


@dataclasses.dataclass(frozen=True)
class TlsResult:
    """The TLS outcome of one session to one MX host."""

    domain: str  # the policy domain (the recipient domain for MTA-STS)
    policy_type: str  # sts | tlsa | no-policy-found
    policy_strings: tuple[str, ...]
    mx_host: str
    address: str
    result: str = "success"


class TlsRecorder(Protocol):
    """Where session outcomes go."""

    async def record(self, result: TlsResult) -> None:
        """Count one session outcome."""
        ...


def _day(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


class RedisTlsRecorder:
    """Count outcomes in Redis (shared by every relay process)."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:tlsrpt"

    async def record(self, result: TlsResult) -> None:
        """Count one session outcome for today (UTC)."""
        metrics.TLS_SESSIONS.labels(policy=result.policy_type, result=result.result).inc()
        day = _day()
        key = f"{self.prefix}:{day}:{result.domain}"
        field = json.dumps([result.policy_type, result.result, result.mx_host, result.address])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, field, 1)
            pipe.expire(key, KEEP_SECONDS)
            pipe.hset(f"{key}:policies", result.policy_type, json.dumps(result.policy_strings))
            pipe.expire(f"{key}:policies", KEEP_SECONDS)
            pipe.sadd(f"{self.prefix}:{day}", result.domain)
            pipe.expire(f"{self.prefix}:{day}", KEEP_SECONDS)
            await pipe.execute()


class MetricsOnlyRecorder:
    """Count outcomes in metrics only (no Redis configured)."""

    async def record(self, result: TlsResult) -> None:
        """Count one session outcome in the Prometheus counter."""
        metrics.TLS_SESSIONS.labels(policy=result.policy_type, result=result.result).inc()


def build_reports(redis: Any, prefix: str, day: str, *, organization: str,
                  contact: str) -> list[dict[str, Any]]:
    """Return the RFC 8460 JSON report of every policy domain seen on ``day``.

    ``redis`` is a synchronous client (the CLI's).
    """
    base = f"{prefix}:tlsrpt"
    start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    reports = []
    for raw_domain in sorted(redis.smembers(f"{base}:{day}")):
        domain = raw_domain.decode() if isinstance(raw_domain, bytes) else raw_domain
        counts = redis.hgetall(f"{base}:{day}:{domain}")
        strings = redis.hgetall(f"{base}:{day}:{domain}:policies")
        policies: dict[str, dict[str, Any]] = {}
        for raw_field, raw_count in counts.items():
            policy_type, result, mx_host, address = json.loads(raw_field)
            entry = policies.setdefault(policy_type, {
                "policy": {"policy-type": policy_type, "policy-domain": domain,
                           "policy-string": json.loads(
                               strings.get(policy_type.encode(), strings.get(policy_type, "[]"))
                               or "[]")},
                "summary": {"total-successful-session-count": 0,
                            "total-failure-session-count": 0},
                "failure-details": [],
            })
            count = int(raw_count)
            if result == "success":
                entry["summary"]["total-successful-session-count"] += count
                continue
            entry["summary"]["total-failure-session-count"] += count
            entry["failure-details"].append({
                "result-type": result, "receiving-mx-hostname": mx_host,
                "receiving-ip": address, "failed-session-count": count})
        for entry in policies.values():
            entry["failure-details"].sort(key=lambda d: (d["result-type"], d["receiving-mx-hostname"]))
            if not entry["failure-details"]:
                del entry["failure-details"]
        reports.append({
            "organization-name": organization,
            "date-range": {"start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "end-datetime": (end - dt.timedelta(seconds=1)).strftime(
                               "%Y-%m-%dT%H:%M:%SZ")},
            "contact-info": contact,
            "report-id": f"{day}_{domain}@{organization}",
            "policies": [policies[k] for k in sorted(policies)],
        })
    return reports
