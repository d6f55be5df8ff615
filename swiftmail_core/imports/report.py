"""The per-row error report: a CSV (row, reason, value) kept in storage."""

from __future__ import annotations

import csv
import io
from typing import BinaryIO

from swiftmail_core.exports.csv_safety import escape_cell
from swiftmail_core.storage import Storage

FLUSH_AT = 1 << 16
MAX_VALUE_LENGTH = 200


class ErrorReport:
    """Collect rejected rows and stream them to ``key`` in storage.

    ``row`` is the spreadsheet row number: the header is row 1, the first
    data row is row 2. Nothing is written when no row fails.
    """

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.count = 0
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")
        self._handle: BinaryIO | None = None
        self.samples: list[dict[str, object]] = []

    def add(self, row: int, reason: str, value: str = "") -> None:
        """Record that ``row`` was rejected for ``reason``."""
        if self._handle is None:
            self._handle = self.storage.open_write(self.key)
            self._writer.writerow(["row", "reason", "value"])
        self.count += 1
        if len(self.samples) < 10:
            self.samples.append({"row": row, "reason": reason})
        self._writer.writerow([row, reason, escape_cell(value[:MAX_VALUE_LENGTH])])
        if self._buffer.tell() >= FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        assert self._handle is not None
        self._handle.write(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def close(self) -> str | None:
        """Finish the file; return its key, or None when no row failed."""
        if self._handle is None:
            return None
        self._flush()
        self._handle.close()
        return self.key

    def abort(self) -> None:
        """Discard the report (the import failed as a whole)."""
        if self._handle is not None:
            abort = getattr(self._handle, "abort", None)
            if abort is not None:
                abort()
            else:
                self._handle.close()
                self.storage.delete(self.key)
            self._handle = None
