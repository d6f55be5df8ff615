"""The checks behind `swiftmail doctor`, usable from code and tests."""

from __future__ import annotations

import dns.exception
import dns.resolver
import psycopg2
import redis

from swiftmail_core import redis_clients
from swiftmail_core.db.audit import Finding, audit, check_connectable
from swiftmail_core.db.migrate import pending_migrations
from swiftmail_core.db.schema_version import describe, problem, read_state
from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.errors import SwiftMailError
from swiftmail_core.parent_rows import orphan_findings
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


def _owner_elsewhere(settings: Settings, finding: Finding) -> Finding:
    """Make a failed owner connect a warning on a host not given the owner's password.

    The migration host alone holds ``db_owner_password``; on the others the
    owner checks (pending migrations, the isolation audit) run there instead.
    """
    if finding.ok or finding.check != "connect as owner role" or settings.db_owner_password:
        return finding
    return Finding(False, finding.check,
                   "no db_owner_password on this host: the owner checks (migrations, "
                   "isolation audit) run on the migration host", warning=True)


def _check_schema(targets: DatabaseTargets) -> Finding:
    try:
        state = read_state(targets)
    except psycopg2.OperationalError as ex:
        return Finding(False, "schema version fits this code", str(ex).strip().splitlines()[0])
    reason = problem(state)
    return Finding(reason is None, "schema version fits this code", reason or describe(state))


def _check_orphans(targets: DatabaseTargets) -> list[Finding]:
    """Children whose parent is gone, where a foreign key no longer says (0189)."""
    try:
        connection = psycopg2.connect(targets.dsn("system"), connect_timeout=5)
    except psycopg2.OperationalError as ex:
        return [Finding(False, "no orphan rows", str(ex).strip().splitlines()[0])]
    try:
        with connection, connection.cursor() as cursor:
            return orphan_findings(cursor)
    except psycopg2.Error as ex:  # a database not migrated yet: the migrations check says so
        return [Finding(False, "no orphan rows", str(ex).strip().splitlines()[0], warning=True)]
    finally:
        connection.close()


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
    connect = [_owner_elsewhere(settings, finding) for finding in check_connectable(targets)]
    findings.extend(connect)
    by_role = dict(zip(("owner", "app", "system"), connect, strict=True))
    if by_role["system"].ok:
        findings.append(_check_schema(targets))
        findings.extend(_check_orphans(targets))
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
