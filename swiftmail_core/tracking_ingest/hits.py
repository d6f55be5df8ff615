"""One tracking hit as the public endpoints saw it, and its stream encoding."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import time
import uuid
from collections.abc import Mapping

HIT_KINDS = ("open", "click")
USER_AGENT_LIMIT = 300

#: Parse a tenant's or campaign's id, once per distinct text: a drained batch
#: names a few of them thousands of times (raises ValueError when malformed).
shared_uuid = functools.lru_cache(maxsize=4096)(uuid.UUID)


@dataclasses.dataclass(frozen=True)
class Hit:
    """An open or click on a verified token, before classification."""

    kind: str
    tenant_id: uuid.UUID
    message_id: int
    link_id: int | None = None
    at_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))
    ip: str = ""
    user_agent: str = ""
    method: str = "GET"
    prefetch: bool = False

    @property
    def occurred_at(self) -> datetime.datetime:
        """Return the moment of the hit (stable across drainer retries)."""
        return datetime.datetime.fromtimestamp(self.at_ms / 1000, tz=datetime.UTC)

    def to_fields(self) -> dict[str, str]:
        """Return the stream entry fields of this hit."""
        return {
            "k": self.kind,
            "t": str(self.tenant_id),
            "m": str(self.message_id),
            "l": "" if self.link_id is None else str(self.link_id),
            "at": str(self.at_ms),
            "ip": self.ip,
            "ua": self.user_agent[:USER_AGENT_LIMIT],
            "me": self.method,
            "pf": "1" if self.prefetch else "",
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> Hit:
        """Parse stream entry fields; raise ValueError when malformed."""
        data = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            )
            for k, v in fields.items()
        }
        kind = data["k"]
        if kind not in HIT_KINDS:
            raise ValueError(f"unknown hit kind {kind!r}")
        return cls(
            kind=kind,
            tenant_id=shared_uuid(data["t"]),
            message_id=int(data["m"]),
            link_id=int(data["l"]) if data.get("l") else None,
            at_ms=int(data["at"]),
            ip=data.get("ip", ""),
            user_agent=data.get("ua", ""),
            method=data.get("me", "GET"),
            prefetch=bool(data.get("pf")),
        )
