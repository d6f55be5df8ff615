"""API clients of the campaign chaos test, run on the control host, through HAProxy.

Usage:
    python -m tests.cluster.api_client campaign HOST:PORT KEY LIST_ID
        creates a campaign to the list (relay transport) and schedules it now;
        prints {"campaign": id}
    python -m tests.cluster.api_client transactional HOST:PORT KEY DOMAIN STOP_FILE SECONDS
        sends transactional mail (``POST /v1/messages``) one message after another
        until STOP_FILE exists (or SECONDS pass), one JSON line per request:
        ``{"t", "n", "ok", "status", "seconds", "error", "id"}``

The transactional client behaves as a careful integrator's would: each message
has its own ``Idempotency-Key``; a failed request (any transport error or a
status other than 202) is counted and sent again with the same key after a
short pause, for at most ``GIVE_UP_SECONDS``; then the next message. So every
message ``n`` that got a 202 must be in the ledger exactly once, however often
it was sent.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import uuid

TIMEOUT = 30.0  # one request; HAProxy's own server timeout is 60 s
PAUSE = 0.1  # between messages: about 5-10 a second on the test machine
RETRY_PAUSE = 0.5
GIVE_UP_SECONDS = 120.0


class _Connection:
    """One kept-alive connection to HAProxy, made again after any error."""

    def __init__(self, address: str, key: str) -> None:
        host, port = address.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict, idempotency_key: str = "") -> tuple[int, bytes]:  # type: ignore[type-arg]
        """POST ``body`` as JSON; return (status, payload); raise on transport errors."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        headers = dict(self.headers)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            self.connection.request("POST", path, body=json.dumps(body), headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise


def _until_ok(connection: _Connection, path: str, body: dict, expected: int) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + GIVE_UP_SECONDS
    key = uuid.uuid4().hex
    while True:
        try:
            status, payload = connection.post(path, body, key)
            if status == expected:
                return json.loads(payload)
            problem = f"{status} {payload[:300]!r}"
        except (OSError, http.client.HTTPException) as ex:
            problem = f"{type(ex).__name__}: {ex}"
        if time.monotonic() > deadline:
            raise SystemExit(f"POST {path} kept failing: {problem}")
        print(f"retrying POST {path}: {problem}", file=sys.stderr, flush=True)
        time.sleep(1.0)


def create_campaign(address: str, key: str, list_id: str) -> None:
    """Create a campaign to ``list_id`` and schedule it now; print its id."""
    connection = _Connection(address, key)
    campaign = _until_ok(connection, "/v1/campaigns", {
        "name": "Chaos", "subject": "Hello {{ contact.first_name }}",
        "html": "<p>Hi {{ contact.first_name }}, plan {{ contact.plan }}</p>",
        "from_email": "news@sender.test", "from_name": "Sender", "transport": "relay",
        "list_ids": [list_id]}, 201)
    _until_ok(connection, f"/v1/campaigns/{campaign['id']}/schedule", {}, 200)
    print(json.dumps({"campaign": campaign["id"]}), flush=True)


def send_transactional(address: str, key: str, domain: str, stop_file: str,
                       seconds: float) -> None:
    """Send messages tx<n>@``domain`` until ``stop_file`` exists; log every request."""
    connection = _Connection(address, key)
    deadline = time.monotonic() + seconds
    number = 0
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        idempotency_key = f"chaos-tx-{number}-{uuid.uuid4().hex[:8]}"
        body = {"to": f"tx{number}@{domain}", "from_email": "app@sender.test",
                "subject": f"Your code {number}", "text": f"Code {number}"}
        given_up = time.monotonic() + GIVE_UP_SECONDS
        while True:
            started = time.time()
            status, error, ledger_id = None, None, None
            try:
                status, payload = connection.post("/v1/messages", body, idempotency_key)
                if status == 202:
                    ledger_id = json.loads(payload)["id"]
                else:
                    error = payload[:200].decode(errors="replace")
            except (OSError, http.client.HTTPException) as ex:
                error = f"{type(ex).__name__}: {ex}"[:200]
            ok = status == 202
            print(json.dumps({"t": started, "n": number, "ok": ok, "status": status,
                              "seconds": round(time.time() - started, 3), "error": error,
                              "id": ledger_id}), flush=True)
            if ok or time.monotonic() > given_up:
                break
            time.sleep(RETRY_PAUSE)
        number += 1
        time.sleep(PAUSE)


def main(argv: list[str]) -> None:
    """Run one sub-command (see the module docstring)."""
    if argv[0] == "campaign":
        create_campaign(argv[1], argv[2], argv[3])
    else:
        send_transactional(argv[1], argv[2], argv[3], argv[4], float(argv[5]))


if __name__ == "__main__":
    main(sys.argv[1:])
