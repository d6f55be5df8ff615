"""Send a campaign through a SwiftMail API and wait until a sink saw every recipient.

Usage: python3 campaign.py API_URL API_KEY RECIPIENTS DOMAIN SINK_LOG [SECONDS [RETRY_SECONDS]]

Creates a list, RECIPIENTS contacts ``e2e-<run>-<n>@DOMAIN`` subscribed to it
and a campaign to the list, schedules it now, then waits (at most SECONDS,
default 180) until SINK_LOG (one ``<time> <client> <recipient>`` line per
accepted recipient, further fields ignored, as tests/cluster/sink_host.py writes it) names every
recipient. Prints one JSON line: recipients, delivered, seconds, the sending
clients seen, and the first API call's attempts and seconds; exits 1 when
not every recipient arrived in time. With RETRY_SECONDS, the first call
(creating the list, with an Idempotency-Key, so a repeat is safe) is tried
again after a timeout, a refused connection or a 5xx for that long (the HA
scenario, right after a failover). Standard library only: it runs with any
python3.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


class Unavailable(Exception):
    """The API did not answer in time, refused the connection or answered 5xx."""


def call(api: str, key: str, method: str, path: str, body: object | None = None,
         headers: dict[str, str] | None = None) -> dict:
    """Call the API and return its JSON answer; exit with the problem on a 4xx."""
    request = urllib.request.Request(  # noqa: S310 (the test's own http API URL)
        api + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                 **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            text = answer.read().decode()
    except urllib.error.HTTPError as error:
        problem = f"{method} {path}: {error.code} {error.read().decode()[:500]}"
        if error.code >= 500:
            raise Unavailable(problem) from error
        sys.exit(problem)
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        raise Unavailable(f"{method} {path}: {error}") from error
    return json.loads(text) if text else {}


def first_call(api: str, key: str, path: str, body: object, retry_seconds: float) -> tuple[dict, dict]:
    """POST once with an Idempotency-Key, again while unavailable for ``retry_seconds``."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    began = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            answer = call(api, key, "POST", path, body, headers)
        except Unavailable as error:
            if time.monotonic() - began >= retry_seconds:
                sys.exit(f"{error} (attempt {attempts}, {time.monotonic() - began:.1f} s)")
            print(f"attempt {attempts}: {error}", file=sys.stderr, flush=True)
            time.sleep(2)
            continue
        return answer, {"attempts": attempts, "seconds": round(time.monotonic() - began, 1)}


def seen(log: Path) -> dict[str, str]:
    """Return {recipient: client address} for every line of the sink's log."""
    if not log.exists():
        return {}
    rows = (line.split() for line in log.read_text().splitlines())
    return {row[2]: row[1] for row in rows if len(row) >= 3}


def main(api: str, key: str, count: int, domain: str, log: Path, seconds: float,
         retry_seconds: float = 0.0) -> None:
    """Create and schedule the campaign, then wait for the sink."""
    run = uuid.uuid4().hex[:8]
    recipients = [f"e2e-{run}-{n}@{domain}" for n in range(count)]
    audience, first = first_call(api, key, "/v1/lists",
                                 {"name": f"e2e {run}", "double_opt_in": False}, retry_seconds)
    for start in range(0, count, 500):
        call(api, key, "POST", "/v1/contacts/bulk", {
            "contacts": [{"email": email} for email in recipients[start:start + 500]],
            "list_ids": [audience["id"]]})
    campaign = call(api, key, "POST", "/v1/campaigns", {
        "name": f"e2e {run}", "subject": "Hello from the split install",
        "html": "<p>Hello {{ contact.email }}</p>", "from_email": f"news@{domain}",
        "list_ids": [audience["id"]]})
    began = time.monotonic()
    call(api, key, "POST", f"/v1/campaigns/{campaign['id']}/schedule", {})
    wanted = set(recipients)
    arrived: dict[str, str] = {}
    while time.monotonic() - began < seconds:
        arrived = {email: client for email, client in seen(log).items() if email in wanted}
        if len(arrived) == count:
            break
        time.sleep(1)
    print(json.dumps({"recipients": count, "delivered": len(arrived),
                      "seconds": round(time.monotonic() - began, 1),
                      "clients": sorted(set(arrived.values())), "campaign": campaign["id"],
                      "first_call": first}),
          flush=True)
    sys.exit(0 if len(arrived) == count else 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], Path(sys.argv[5]),
         float(sys.argv[6]) if len(sys.argv) > 6 else 180.0,
         float(sys.argv[7]) if len(sys.argv) > 7 else 0.0)
