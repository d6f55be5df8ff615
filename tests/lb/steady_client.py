"""A steady API client: GETs and idempotent POSTs, counting every failure."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from dataclasses import dataclass, field


@dataclass
class Tally:
    """What a steady client saw."""

    requests: int = 0
    gets: int = 0
    posts: int = 0
    failures: list[str] = field(default_factory=list)
    created: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (body, id)


class SteadyClient(threading.Thread):
    """Alternate GET /v1/contacts and POST /v1/contacts (with an Idempotency-Key).

    Keeps one kept-alive connection to HAProxy, as a real client would; a
    transport error or any unexpected status is a failure (no retries here).
    """

    def __init__(self, host: str, port: int, api_key: str, name: str) -> None:
        super().__init__(name=f"steady-client-{name}", daemon=True)
        self.host = host
        self.port = port
        self.api_key = api_key
        self.label = name
        self.tally = Tally()
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def counts(self) -> tuple[int, int]:
        """Return (requests, failures) so far."""
        with self._lock:
            return self.tally.requests, len(self.tally.failures)

    def run(self) -> None:
        """Send requests until ``stopping`` is set."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        number = 0
        while not self.stopping.is_set():
            number += 1
            post = number % 2 == 0
            headers = {"Authorization": f"Bearer {self.api_key}"}
            body = None
            key = ""
            if post:
                key = f"lb-{self.label}-{number}-{uuid.uuid4().hex[:8]}"
                body = json.dumps({"email": f"{key}@example.com"})
                headers.update({"Content-Type": "application/json", "Idempotency-Key": key})
            try:
                connection.request("POST" if post else "GET",
                                   "/v1/contacts" if post else "/v1/contacts?limit=5",
                                   body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == (201 if post else 200)
                problem = "" if ok else f"{response.status} {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as ex:
                ok, problem, payload = False, f"{type(ex).__name__}: {ex}", b""
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            with self._lock:
                self.tally.requests += 1
                if post:
                    self.tally.posts += 1
                else:
                    self.tally.gets += 1
                if not ok:
                    self.tally.failures.append(f"{'POST' if post else 'GET'}: {problem}")
                elif post and len(self.tally.created) < 20:
                    self.tally.created[key] = (body or "", json.loads(payload)["id"])
            self.stopping.wait(0.01)
        connection.close()
