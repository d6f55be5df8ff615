"""The Redis stream between the tracking endpoints and the drainer.

Durability: a hit is acknowledged to the client once ``XADD`` returned, that
is once it is in Redis memory. Killing any SwiftMail process loses nothing
after that. Surviving a Redis crash or a power cut depends on Redis's own
persistence: the embedded Redis runs with ``appendonly yes`` (fsync every
second, so at most about a second of hits is at risk on a power cut); an
external Redis keeps what its operator configured (a Redis without AOF or
snapshots loses unstored hits on restart). See docs/tracking.md.
"""

from __future__ import annotations

import redis

from swiftmail_core.tracking_ingest.hits import Hit

DEFAULT_STREAM = "swiftmail:tracking:hits"
DEFAULT_GROUP = "drainers"
# NOTE: a safety cap, far above any healthy backlog; XADD trims approximately.
DEFAULT_MAXLEN = 5_000_000


class HitStream:
    """Append hits to a Redis stream and read them through a consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        name: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        maxlen: int | None = DEFAULT_MAXLEN,
    ) -> None:
        self.client = client
        self.name = name
        self.group = group
        self.maxlen = maxlen

    def add(self, hit: Hit) -> str:
        """Append one hit; return its entry id (the hit is acknowledged now)."""
        entry = self.client.xadd(
            self.name, hit.to_fields(), maxlen=self.maxlen, approximate=True  # type: ignore[arg-type]
        )
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            self.client.xgroup_create(self.name, self.group, id="0", mkstream=True)
        except redis.ResponseError as ex:
            if "BUSYGROUP" not in str(ex):
                raise

    def read_pending(self, consumer: str, count: int) -> list[tuple[str, dict]]:
        """Return entries delivered to ``consumer`` but never acknowledged."""
        return self._entries(
            self.client.xreadgroup(self.group, consumer, {self.name: "0"}, count=count)
        )

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict]]:
        """Return up to ``count`` new entries, waiting up to ``block_ms``."""
        return self._entries(
            self.client.xreadgroup(
                self.group, consumer, {self.name: ">"}, count=count, block=block_ms
            )
        )

    def claim_abandoned(
        self, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, dict]]:
        """Take over entries another consumer read but did not acknowledge."""
        reply = self.client.xautoclaim(
            self.name, self.group, consumer, min_idle_time=min_idle_ms, start_id="0-0",
            count=count,
        )
        return [(self._id(entry_id), fields) for entry_id, fields in reply[1] if fields]

    def acknowledge(self, entry_ids: list[str]) -> None:
        """Acknowledge and delete entries whose events are committed."""
        if entry_ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.name, self.group, *entry_ids)
            pipe.xdel(self.name, *entry_ids)
            pipe.execute()

    def backlog(self) -> int:
        """Return the number of entries not yet acknowledged or not yet read."""
        return int(self.client.xlen(self.name))

    @staticmethod
    def _id(entry_id: bytes | str) -> str:
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    def _entries(self, reply) -> list[tuple[str, dict]]:
        entries = []
        for _stream, items in reply or []:
            for entry_id, fields in items:
                entries.append((self._id(entry_id), fields))
        return entries
