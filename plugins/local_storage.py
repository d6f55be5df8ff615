"""Built-in storage: files under ``storage_dir`` on the local filesystem.

Writes go to a temporary file that is fsynced and renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.settings import Settings


class _AtomicWriter:
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        self.temp = Path(name)
        self.handle = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        return self.handle.write(data)

    def close(self) -> None:
        if self.handle.closed:
            return
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        self.handle.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> _AtomicWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.close()
        else:
            self.abort()


class LocalStorage:
    """Blobs as files below a root directory."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # APPSEC: keys come from our own code, but never let one escape the root.
        if not path.is_relative_to(self.root.resolve()) or not key:
            raise ValidationError.for_field("key", f"{key!r} is not a valid storage key")
        return path

    def open_write(self, key: str) -> BinaryIO:
        """Open ``key`` for writing; the file appears atomically on close."""
        return _AtomicWriter(self._path(key))  # type: ignore[return-value]

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for reading."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as ex:
            raise NotFoundError(f"no stored file {key!r}") from ex

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Return True if ``key`` exists."""
        return self._path(key).is_file()


@hookimpl(trylast=True)
def swiftmail_storage(settings: Settings) -> LocalStorage:
    """Provide local filesystem storage unless another plugin answers first."""
    assert settings.storage_dir is not None
    return LocalStorage(settings.storage_dir)
