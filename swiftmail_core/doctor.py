"""The checks behind `swiftmail doctor`, usable from code and tests."""

from __future__ import annotations

import dns.exception
import dns.resolver
import redis

from swiftmail_core import redis_clients
from swiftmail_core.db.audit import Finding, audit, check_connectable
from swiftmail_core.db.migrate import pending_migrations
from swiftmail_core.db.targets import database_targets
from swiftmail_core.errors import SwiftMailError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    """Return a resolver honouring dns_nameservers and dns_port."""
    if settings.dns_nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(settings.dns_nameservers)
        resolver.port = settings.dns_port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = 5.0
    return resolver


def _check_dns(settings: Settings, outside_dns: bool) -> Finding:
    resolver = make_resolver(settings)
    try:
        resolver.resolve(".", "NS")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass  # an answer, even a negative one, proves the resolver works
    except dns.exception.DNSException as ex:
        detail = f"{type(ex).__name__}: {ex}"
        if not outside_dns:
            detail += "; only a relay needs outside DNS (its MX lookups)"
        return Finding(False, "DNS resolver answers", detail, warning=not outside_dns)
    return Finding(True, "DNS resolver answers", ", ".join(map(str, resolver.nameservers)))


def _check_redis(settings: Settings) -> Finding:
    try:
        redis_clients.client(settings, retries=0).ping()
        where = redis_clients.describe(settings)
    except (SwiftMailError, redis.RedisError, OSError) as ex:
        return Finding(False, "Redis answers", str(ex))
    return Finding(True, "Redis answers", where)


def run_checks(settings: Settings, *, outside_dns: bool = True) -> list[Finding]:
    """Run every doctor check; never raises for a failed check.

    With ``outside_dns`` false a resolver that does not answer is a warning,
    not a failure: hosts without a relay make no MX lookups.
    """
    findings: list[Finding] = []
    try:
        targets = database_targets(settings)
    except SwiftMailError as ex:
        return [Finding(False, "PostgreSQL reachable", ex.detail)]
    connect = check_connectable(targets)
    findings.extend(connect)
    if all(finding.ok for finding in connect):
        pending = pending_migrations(targets)
        findings.append(
            Finding(not pending, "migrations applied",
                    f"pending: {', '.join(pending)}; run `swiftmail migrate`" if pending else "")
        )
        findings.extend(audit(targets))
        if settings.citus:
            from swiftmail_core.db.citus import citus_findings

            findings.extend(citus_findings(targets))
    findings.append(_check_redis(settings))
    try:
        manager = PluginManager.load(settings)
        manager.transports()
        names = ", ".join(info.name for info in manager.plugin_info())
        findings.append(Finding(True, "plugins load", names))
        findings.extend(manager.doctor_checks())
    except SwiftMailError as ex:
        findings.append(Finding(False, "plugins load", ex.detail))
    findings.append(_check_dns(settings, outside_dns))
    return findings
