"""The webhook signature: HMAC-SHA256 over the timestamp and the body.

Header: ``SwiftMail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, where
the HMAC key is the webhook's secret and the message is ``"<t>." + body``
(the exact bytes received). Receivers recompute it, compare in constant time
and refuse timestamps too far from now (replays). See docs/tracking.md.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "SwiftMail-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def sign_payload(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """Return the signature header value for ``body`` at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    moment = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(key, str(moment).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def verify_signature(
    secret: str | bytes,
    header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Return whether ``header`` signs ``body`` with ``secret`` recently enough."""
    parts: dict[str, list[str]] = {}
    for item in (header or "").split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        moment = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        return False
    expected = sign_payload(secret, body, moment).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
