"""Traffic shaping shared by every relay process through Redis.

Limits apply per destination *site* (the set of MX hosts, so every domain a
provider hosts shares one limit) or, when the MX names match a provider
group (Google, Microsoft, Yahoo, Apple by MX suffix; ``provider_groups``
adds groups or changes them, see ``provider_groups()``), per group. Four
limits: concurrent connections (a Redis sorted set of leased slots), new
connections per minute, messages per second (fixed windows) and messages
per connection (enforced by the deliverer). Rate and warm-up budgets are
taken together, at the moment of sending, or not at all.

Slot leases are short (``LEASE``, 15 s) and a heartbeat task of the live
process renews every lease it holds each ``LEASE / 3`` seconds, so the slots
of a relay that died (``kill -9``, a lost host) free themselves within one
lease, while a live relay keeps its slots however long a session lasts.

Warm-up: per sending domain and per sending IP, a day-indexed hourly cap
per provider group, ``warmup_start_per_hour * warmup_factor ** day``; mail
over the cap waits (an internal deferral) and goes when the cap allows. An
IP or domain idle for ``warmup_idle_days`` starts again at day 0.

Adaptive backoff: remote replies matching a rule (Yahoo ``[TSS04]``, "rate
limited due to IP reputation", Gmail "unusual rate") suspend the site for a
set time. Replies this relay made itself (``Reply.local``) never match.

Fail safe: when Redis cannot be asked (down, failing over), a lost counter
never means unthrottled sending. ``admit`` holds the mail for
``UNAVAILABLE_HOLD_SECONDS`` (an internal deferral, no attempt counted), no
new connection slot is granted, a slot that cannot be given back stays
leased until its lease runs out (fewer connections, never more), and a
backoff that cannot be stored suspends the site in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from swiftmail_relay import metrics
from swiftmail_relay.classify import Reply
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.mx import Route
from swiftmail_relay.spool import Envelope
from swiftmail_relay.throttle import SitePolicy, Wait

log = structlog.get_logger("swiftmail.relay.shaping")

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "google": ("google.com", "googlemail.com"),
    "microsoft": ("outlook.com", "protection.outlook.com", "hotmail.com"),
    "yahoo": ("yahoodns.net", "yahoo.com"),
    "apple": ("icloud.com", "apple.com", "me.com"),
}
# Published practice: Google and Microsoft 5 connections and 50 messages per
# connection; Yahoo 20 messages per connection; Apple 5 connections.
DEFAULT_POLICIES: dict[str, SitePolicy] = {
    "default": SitePolicy(max_connections=20, messages_per_connection=100),
    "google": SitePolicy(max_connections=5, messages_per_connection=50),
    "microsoft": SitePolicy(max_connections=5, messages_per_connection=50),
    "yahoo": SitePolicy(max_connections=5, messages_per_connection=20),
    "apple": SitePolicy(max_connections=5, messages_per_connection=50),
}


@dataclasses.dataclass(frozen=True)
class BackoffRule:
    """Suspend a destination for ``seconds`` when a remote reply matches."""

    pattern: re.Pattern[str]
    seconds: float


DEFAULT_BACKOFF = (
    BackoffRule(re.compile(r"\[TSS0[1-9]\]", re.I), 1800.0),
    BackoffRule(re.compile(r"rate limited due to IP reputation", re.I), 900.0),
    BackoffRule(re.compile(r"unusual rate", re.I), 600.0),
    BackoffRule(re.compile(r"too many (connections|messages)", re.I), 300.0),
)

ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
if tonumber(ARGV[5]) > 0 then
  local made = redis.call('INCR', KEYS[2])
  if made == 1 then redis.call('EXPIRE', KEYS[2], 120) end
  if made > tonumber(ARGV[5]) then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""

# Take every budget or none: ARGV = n, then (count, cap, ttl) per key.
# Returns 0 when all were taken, else the 1-based index of the first refusal.
TAKE_ALL = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i]) then return i end
end
for i = 1, n do
  local used = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
  if used == tonumber(ARGV[3 * i - 1]) then redis.call('EXPIRE', KEYS[i], ARGV[3 * i + 1]) end
end
return 0
"""


#: Seconds mail waits when Redis cannot be asked, before admission is tried again.
UNAVAILABLE_HOLD_SECONDS = 5.0
#: Seconds a refused slot request (Redis unreachable) waits before saying no,
#: so the deliverer's polling does not spin while Redis fails over.
UNAVAILABLE_SLOT_PAUSE = 1.0
#: What a failed Redis call raises: the client's errors and the socket's.
REDIS_FAILURES = (redis.RedisError, OSError)


def provider_groups(configured: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Return the provider groups: the built-in ones extended by ``provider_groups``.

    A configured group adds to the built-ins or, under a built-in's name,
    replaces that group's suffixes; an empty list removes a group (list
    every built-in name with ``[]`` to replace them all). Configured groups
    are matched first, so they may claim a suffix a built-in group has.
    """
    merged: dict[str, tuple[str, ...]] = {}
    for name, suffixes in {**DEFAULT_GROUPS, **(configured or {})}.items():
        if isinstance(suffixes, str):
            suffixes = [suffixes]
        cleaned = tuple(str(s).lower().strip().lstrip(".") for s in suffixes if str(s).strip())
        if cleaned:
            merged[name] = cleaned
    ordered = [name for name in (configured or {}) if name in merged]
    ordered += [name for name in merged if name not in ordered]
    return {name: merged[name] for name in ordered}


def group_of(site: str, groups: Mapping[str, tuple[str, ...]]) -> str | None:
    """Return the provider group whose MX suffixes match a site (comma-joined MX names)."""
    for name in site.split(","):
        for group, suffixes in groups.items():
            if any(name == s or name.endswith("." + s) for s in suffixes):
                return group
    return None


@dataclasses.dataclass(frozen=True)
class _Budget:
    """One counter an admission takes from: key, amount, cap, TTL, and the wait if refused."""

    key: str
    count: int
    cap: int
    ttl: int
    wait: Wait


def _policy(values: Mapping[str, Any], base: SitePolicy) -> SitePolicy:
    fields = {f.name for f in dataclasses.fields(SitePolicy)}
    return dataclasses.replace(base, **{k: v for k, v in values.items() if k in fields})


class RedisShaper:
    """The ``Throttle`` the relay uses in production: limits held in Redis."""

    LEASE = 15.0

    def __init__(self, config: RelayConfig, client: aioredis.Redis, *,
                 backoff: tuple[BackoffRule, ...] = DEFAULT_BACKOFF,
                 lease: float | None = None) -> None:
        self.config = config
        self.lease = lease or self.LEASE
        self._heartbeat: asyncio.Task[None] | None = None
        #: From ``swiftmail_core.redis_clients`` (a URL's server or the Sentinels' master).
        self.redis = client
        self.prefix = config.redis_prefix
        self.backoff = backoff
        self.groups = provider_groups(config.provider_groups)
        self.policies = dict(DEFAULT_POLICIES)
        self.policies["default"] = dataclasses.replace(
            self.policies["default"], max_connections=config.max_connections_per_site,
            messages_per_connection=config.messages_per_connection)
        for name, values in (config.policies or {}).items():
            self.policies[name] = _policy(values, self.policies.get(name, self.policies["default"]))
        self._held: dict[str, list[str]] = {}
        #: Suspensions this process could not store in Redis: scope -> monotonic end.
        self._local_suspensions: dict[str, float] = {}
        self.acquired = self.released = 0
        self.unavailable = 0
        self._acquire = self.redis.register_script(ACQUIRE)
        self._take = self.redis.register_script(TAKE_ALL)

    # Keys and policies -------------------------------------------------------

    def group(self, site: str) -> str | None:
        """Return the provider group of a site (MX names), if any."""
        return group_of(site, self.groups)

    def scope(self, site: str) -> str:
        """Return the key that limits are counted under: the group or the site."""
        group = self.group(site)
        return f"group:{group}" if group else f"site:{site}"

    def policy(self, route: Route) -> SitePolicy:
        """Return the limits for a route's site."""
        return self.policy_for_site(route.site)

    def policy_for_site(self, site: str) -> SitePolicy:
        """Return the limits for a site string."""
        group = self.group(site)
        return self.policies.get(group or "", self.policies["default"])

    # Connections -------------------------------------------------------------

    def _unavailable(self, action: str, ex: BaseException) -> None:
        self.unavailable += 1
        metrics.THROTTLE_WAITS.labels(reason="redis_unavailable").inc()
        log.warning("shaping_unavailable", action=action, error=f"{type(ex).__name__}: {ex}")

    async def acquire_connection(self, site: str) -> bool:
        """Lease a connection slot in Redis; False when the shared cap is full.

        False too when Redis cannot be asked (after a short pause): no slot
        is granted that the shared count does not hold.
        """
        policy = self.policy_for_site(site)
        scope = self.scope(site)
        now = time.time()
        token = secrets.token_hex(8)
        try:
            granted = await self._acquire(
                keys=[f"{self.prefix}:conn:{scope}",
                      f"{self.prefix}:cpm:{scope}:{int(now // 60)}"],
                args=[now, now + self.lease, policy.max_connections, token,
                      policy.connections_per_minute],
            )
        except REDIS_FAILURES as ex:
            self._unavailable("acquire_connection", ex)
            await asyncio.sleep(UNAVAILABLE_SLOT_PAUSE)
            return False
        if granted:
            self._held.setdefault(scope, []).append(token)
            self.acquired += 1
            if self._heartbeat is None or self._heartbeat.done():
                self._heartbeat = asyncio.create_task(self._renew_forever())
        return bool(granted)

    async def _renew_forever(self) -> None:
        """Renew every lease this process holds, every third of a lease."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew()
            except Exception as ex:  # Redis down: retry next round
                log.warning("slot_renew_failed", error=str(ex))

    async def renew(self) -> int:
        """Push the expiry of every held lease one lease ahead; return how many."""
        expires = time.time() + self.lease
        renewed = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, tokens in self._held.items():
                if tokens:
                    # XX: never re-create a lease a release (or expiry) removed.
                    pipe.zadd(f"{self.prefix}:conn:{scope}", dict.fromkeys(tokens, expires),
                              xx=True)
                    pipe.expire(f"{self.prefix}:conn:{scope}", 3600)
                    renewed += len(tokens)
            if renewed:
                await pipe.execute()
        return renewed

    async def release_connection(self, site: str) -> None:
        """Return a leased slot (one Redis cannot take back expires with its lease)."""
        scope = self.scope(site)
        tokens = self._held.get(scope)
        self.released += 1
        if tokens:
            try:
                await self.redis.zrem(f"{self.prefix}:conn:{scope}", tokens.pop())
            except REDIS_FAILURES as ex:
                self._unavailable("release_connection", ex)

    # Admission ----------------------------------------------------------------

    async def blocked(self, route: Route) -> Wait:
        """Return how long the route's site is suspended (0: not), counting nothing."""
        scope = self.scope(route.site)
        local = self._local_suspensions.get(scope, 0.0) - time.monotonic()
        if local > 0:
            return Wait(local, "suspended")
        try:
            suspended = await self.redis.pttl(f"{self.prefix}:suspend:{scope}")
        except REDIS_FAILURES as ex:
            self._unavailable("blocked", ex)
            return Wait(UNAVAILABLE_HOLD_SECONDS, "unavailable")
        if suspended and suspended > 0:
            return Wait(suspended / 1000.0, "suspended")
        return Wait(0.0, "")

    async def admit(self, route: Route, envelope: Envelope, recipients: int,
                    source: str | None = None) -> float:
        """Return 0 to go now, else seconds to wait (suspension, rate, warm-up).

        Every limit is checked and every budget taken in one Redis script:
        the message's recipients count against the messages-per-second
        window, the source address's and the sending domain's warm-up caps
        only when all of them admit it. Called with a connection in hand,
        right before MAIL, so nothing admitted waits behind a connection cap.
        Redis unreachable: hold for ``UNAVAILABLE_HOLD_SECONDS``, never go.
        """
        suspended = await self.blocked(route)
        if suspended > 0:
            return suspended
        try:
            return await self._admit(route, envelope, recipients, source)
        except REDIS_FAILURES as ex:
            self._unavailable("admit", ex)
            return Wait(UNAVAILABLE_HOLD_SECONDS, "unavailable")

    async def _admit(self, route: Route, envelope: Envelope, recipients: int,
                     source: str | None) -> float:
        scope = self.scope(route.site)
        now = time.time()
        policy = self.policy(route)
        budgets: list[_Budget] = []
        if policy.messages_per_second > 0:
            window = int(now)
            per_second = math.ceil(policy.messages_per_second)
            # A transaction with more recipients than a second allows takes a whole second.
            budgets.append(_Budget(f"{self.prefix}:mps:{scope}:{window}",
                                   min(recipients, per_second), per_second, 5,
                                   Wait((window + 1 - now) + 0.01, "rate")))
        warm: list[str] = []
        if self.config.warmup:
            group = self.group(route.site) or "other"
            hour = int(now // 3600)
            for subject, plan in self._warmup_subjects(envelope, source):
                cap = await self._warmup_cap_now(subject, now, plan)
                warm.append(subject)
                if cap is None:
                    continue  # fully warm
                budgets.append(_Budget(f"{self.prefix}:warm:n:{subject}:{group}:{hour}",
                                       min(recipients, cap), cap, 7200,
                                       Wait((hour + 1) * 3600 - now + 1, "warm-up")))
        if budgets:
            refused = await self._take(
                keys=[b.key for b in budgets],
                args=[len(budgets), *(v for b in budgets for v in (b.count, b.cap, b.ttl))])
            if refused:
                return budgets[int(refused) - 1].wait
        if warm:
            await self.redis.mset({f"{self.prefix}:warm:last:{subject}": now
                                   for subject in warm})
        return 0.0

    def _warmup_subjects(self, envelope: Envelope,
                         source: str | None = None) -> list[tuple[str, Mapping[str, Any]]]:
        # Warm-up is counted per source address: the pool's, else source_ip.
        subjects: list[tuple[str, Mapping[str, Any]]] = [
            (f"ip:{source or self.config.source_ip}", {})]
        plan = envelope.warmup_plan or {}
        if envelope.sender_domain and plan.get("enabled", True):
            subjects.append((f"domain:{envelope.sender_domain}", plan))
        return subjects

    def warmup_cap(self, day: int, plan: Mapping[str, Any] | None = None) -> int:
        """Return the hourly cap per provider group on warm-up ``day`` (0-based).

        A tenant's plan (``start_per_hour``, ``factor``) overrides the
        relay-wide schedule for its domain.
        """
        plan = plan or {}
        start = float(plan.get("start_per_hour", self.config.warmup_start_per_hour))
        factor = float(plan.get("factor", self.config.warmup_factor))
        return int(start * factor ** day)

    async def _warmup_cap_now(self, subject: str, now: float,
                              plan: Mapping[str, Any] | None = None) -> int | None:
        """Return this hour's cap for ``subject`` (None when fully warm); start its clock."""
        start_key = f"{self.prefix}:warm:start:{subject}"
        last_key = f"{self.prefix}:warm:last:{subject}"
        start, last = await self.redis.mget(start_key, last_key)
        idle = self.config.warmup_idle_days * 86400
        if start is None or (last is not None and now - float(last) > idle):
            await self.redis.set(start_key, now)
            start = now
        day = max(0, int((now - float(start)) // 86400))
        if day > 60:  # fully warm: the cap no longer binds
            return None
        return max(1, self.warmup_cap(day, plan))

    # Learning -----------------------------------------------------------------

    async def observe(self, route: Route, replies: list[Reply]) -> None:
        """Suspend the site when a remote reply matches a backoff rule."""
        for reply in replies:
            if reply.local or reply.ok:
                continue
            for rule in self.backoff:
                if rule.pattern.search(reply.text):
                    scope = self.scope(route.site)
                    try:
                        await self.redis.set(f"{self.prefix}:suspend:{scope}",
                                             "1", px=int(rule.seconds * 1000))
                    except REDIS_FAILURES as ex:
                        self._unavailable("observe", ex)
                        self._local_suspensions[scope] = time.monotonic() + rule.seconds
                    return

    async def close(self) -> None:
        """Stop renewing leases and close the Redis connection."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self.redis.aclose()
