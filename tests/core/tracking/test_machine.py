"""Machine opens and bot clicks are flagged with the rule that caught them."""

from __future__ import annotations

import datetime
import uuid

import pytest

from swiftmail_core.tracking_ingest import Hit
from swiftmail_core.tracking_ingest.machine import classify

SENT = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"


def hit(kind: str = "open", seconds_after: float = 3600, **fields) -> Hit:  # type: ignore[no-untyped-def]
    at = SENT + datetime.timedelta(seconds=seconds_after)
    return Hit(kind=kind, tenant_id=uuid.uuid4(), message_id=1,
               link_id=1 if kind == "click" else None,
               at_ms=int(at.timestamp() * 1000), **fields)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"ip": "17.58.1.2", "user_agent": IPHONE}, "privacy_proxy"),
        ({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}, "privacy_proxy"),
        ({"ip": "203.0.113.9", "user_agent": IPHONE, "prefetch": True}, "prefetch"),
        ({"ip": "203.0.113.9", "user_agent": IPHONE, "method": "HEAD"}, "prefetch"),
        ({"ip": "203.0.113.9", "user_agent": "Barracuda Sentinel (EE)"}, "scanner_user_agent"),
        ({"ip": "203.0.113.9", "user_agent": "python-requests/2.31"}, "scanner_user_agent"),
    ],
)
def test_machine_opens_are_flagged(fields, reason) -> None:  # type: ignore[no-untyped-def]
    verdict = classify(hit("open", **fields), SENT)
    assert verdict.is_machine and verdict.reason == reason


def test_person_on_a_phone_is_human() -> None:
    assert not classify(hit("open", ip="203.0.113.9", user_agent=IPHONE), SENT).is_machine
    assert not classify(hit("click", ip="203.0.113.9", user_agent=IPHONE), SENT).is_machine


def test_click_seconds_after_delivery_is_a_scanner() -> None:
    verdict = classify(hit("click", seconds_after=2, ip="198.51.100.4", user_agent=IPHONE), SENT)
    assert verdict.is_machine and verdict.reason == "too_fast"
    later = classify(hit("click", seconds_after=120, ip="198.51.100.4", user_agent=IPHONE), SENT)
    assert not later.is_machine


@pytest.mark.parametrize("agent", [
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
])
def test_webmail_image_proxies_fetch_when_people_open(agent: str) -> None:
    assert not classify(hit("open", ip="66.249.84.1", user_agent=agent), SENT).is_machine


@pytest.mark.parametrize(("fields", "machine", "reason"), [
    # Regressions: a phone whose model name contains "bot" was called a scanner, an
    # empty user agent counted as a person, and Apple's IPv6 proxies were missed.
    ({"ip": "203.0.113.9", "user_agent":
      "Mozilla/5.0 (Linux; Android 12; Robot Build/SP1A.210812) AppleWebKit/537.36"},
     False, ""),
    ({"ip": "203.0.113.9", "user_agent": ""}, True, "no_user_agent"),
    ({"ip": "2620:149:a0c:4000::12", "user_agent": IPHONE}, True, "privacy_proxy"),
    ({"ip": "2403:300:a08:3000::5", "user_agent": IPHONE}, True, "privacy_proxy"),
    ({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"},
     True, "scanner_user_agent"),
])
def test_machine_detection_edge_cases(fields, machine: bool, reason: str) -> None:  # type: ignore[no-untyped-def]
    verdict = classify(hit("open", **fields), SENT)
    assert (verdict.is_machine, verdict.reason) == (machine, reason)


@pytest.mark.parametrize("agent", [
    IPHONE, "GOOGLEBOT/2.1", "Mozilla/5.0 (compatible; SemrushBot/7~bl)", "AdsBot-Google",
    "Outlook-iOS-Android/1.0 Prefetch", "Mozilla/5.0 (Linux; Android 12; Robot Build/SP1A)",
    "BARRACUDA Sentinel", "Go-http-client/1.1", "Java/17.0.2", "HeadlessChrome/120",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
])
def test_scanner_agents_are_found_whatever_their_case(agent: str) -> None:
    """Searching the lowercased agent finds what a case-insensitive search finds."""
    import re

    from swiftmail_core.tracking_ingest.machine import SCANNER_USER_AGENT

    # The pattern is searched in the lowercased agent: an upper-case letter in it never matches.
    assert SCANNER_USER_AGENT.pattern == SCANNER_USER_AGENT.pattern.lower()
    case_insensitive = re.compile(SCANNER_USER_AGENT.pattern, re.IGNORECASE)
    verdict = classify(hit("open", ip="203.0.113.9", user_agent=agent), SENT)
    assert (verdict.reason == "scanner_user_agent") is bool(case_insensitive.search(agent))
