"""Classify SMTP replies by RFC 3463 enhanced status code, with overrides.

Every failure becomes (permanent?, class) where class is one of hard, soft,
policy, mailbox_full, throttled. Providers misuse codes, so an ordered regex
table is consulted first; operators can prepend their own rules.
"""

from __future__ import annotations

import dataclasses
import re

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclasses.dataclass(frozen=True)
class Reply:
    """An SMTP reply (or a locally made one, such as a DNS failure)."""

    code: int
    text: str = ""
    local: bool = False  # made by this relay (DNS, connection, throttle), not a remote peer

    @property
    def enhanced(self) -> str | None:
        """Return the RFC 3463 enhanced code at the start of the text, if any."""
        match = _ENHANCED.match(self.text.strip())
        return match.group(0) if match else None

    @property
    def ok(self) -> bool:
        """True for 2xx."""
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @classmethod
    def parse(cls, line: str, *, local: bool = False) -> Reply:
        """Parse ``"550 5.1.1 no such user"`` into a Reply."""
        code, _, text = line.strip().partition(" ")
        return cls(int(code), text, local=local)


@dataclasses.dataclass(frozen=True)
class Rule:
    """An override: replies matching ``pattern`` get ``bounce_class``."""

    pattern: re.Pattern[str]
    bounce_class: str
    permanent: bool | None = None  # None keeps the code's own verdict


def rule(pattern: str, bounce_class: str, permanent: bool | None = None) -> Rule:
    """Build a case-insensitive override rule."""
    return Rule(re.compile(pattern, re.IGNORECASE), bounce_class, permanent)


DEFAULT_RULES: tuple[Rule, ...] = (
    rule(r"too many recipients", "soft", permanent=False),  # 552 misused for a transient
    rule(r"\[TSS0\d\]|rate.?limit|unusual rate|too many (messages|connections)|"
         r"throttl|try again later", "throttled", permanent=False),
    rule(r"over quota|quota exceeded|mailbox (is )?full|insufficient (system )?storage",
         "mailbox_full"),
    rule(r"spamhaus|blocklist|blacklist|block list|reputation|spam|\bblocked\b|"
         r"policy|not authori[sz]ed|dmarc", "policy"),
    rule(r"user unknown|unknown user|no such (user|mailbox)|does not exist|"
         r"invalid (recipient|mailbox)|recipient rejected|address rejected|"
         r"mailbox unavailable|account (is )?disabled", "hard"),
)


def classify(reply: Reply, rules: tuple[Rule, ...] = DEFAULT_RULES) -> tuple[bool, str]:
    """Return (permanent, bounce_class) for a non-2xx reply."""
    permanent = reply.code >= 500
    for override in rules:
        if override.pattern.search(reply.text):
            if override.bounce_class == "hard" and not permanent:
                break  # a 4xx "unknown user" is not proof; fall through to codes
            return (permanent if override.permanent is None else override.permanent,
                    override.bounce_class)
    enhanced = reply.enhanced
    if enhanced:
        _, subject, detail = enhanced.split(".")
        if subject == "2" and detail == "2":
            return permanent, "mailbox_full"
        if subject == "7":
            return permanent, "policy"
        if subject == "5" and detail == "3":
            return False, "soft"  # too many recipients
        if permanent and subject in ("1", "2"):
            return True, "hard"
    if reply.code == 421:
        return False, "throttled"
    if reply.code == 556:
        return True, "hard"
    return permanent, "hard" if permanent else "soft"
