"""Where import and export files and attachments live."""

from __future__ import annotations

from typing import BinaryIO, Protocol, runtime_checkable


@runtime_checkable
class Storage(Protocol):
    """A blob store addressed by keys that begin with the tenant id."""

    name: str

    def open_write(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming writes; the blob appears on close."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming reads; raise NotFoundError if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        ...

    def exists(self, key: str) -> bool:
        """Return True if ``key`` exists."""
        ...
