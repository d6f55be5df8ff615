"""Feed validated rows to PostgreSQL's COPY without building the file.

``RowStream`` is the file-like object ``cursor.copy_expert`` reads from:
each ``read`` turns the next batches of rows into CSV text with the C csv
writer. The staging table is TEMP and dropped at commit; it lives inside
the tenant transaction, and COPY into it needs no RLS (COPY FROM into a
table with row-level security is not allowed; the set-based merge that
follows runs under the tenant policies).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2

COPY_READ_SIZE = 1 << 20


class RowStream:
    """A readable text stream over an iterator of row batches."""

    def __init__(self, batches: Iterator[list[tuple[Any, ...]]]) -> None:
        self._batches = batches
        self._buffer = io.StringIO()
        # NOTE: with "\r\n" as the terminator the writer quotes a cell holding a bare CR,
        # which COPY refuses unquoted ("unquoted carriage return found in data").
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")
        self._pending = ""
        self._offset = 0
        self._done = False
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> str:
        """Return up to ``size`` characters of CSV ('' at the end)."""
        if size is None or size < 0:
            size = 1 << 62
        while not self._done and len(self._pending) - self._offset < size:
            try:
                batch = next(self._batches, None)
            except BaseException as ex:
                # NOTE: psycopg2 turns an exception in read() into QueryCanceled;
                # keep ours so copy_into can raise it as it was.
                self.error = ex
                raise
            if batch is None:
                self._done = True
                break
            self._writer.writerows(batch)
            self._pending = self._pending[self._offset:] + self._buffer.getvalue()
            self._offset = 0
            self._buffer.seek(0)
            self._buffer.truncate()
        chunk = self._pending[self._offset:self._offset + size]
        self._offset += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> str:
        """Not used by COPY; present for file-like completeness."""
        return self.read(size)


def copy_into(cursor: Any, table: str, columns: Sequence[str], stream: RowStream) -> None:
    """COPY ``stream`` (CSV, NULL as an empty unquoted cell) into ``table``."""
    column_list = ", ".join(columns)
    try:
        cursor.copy_expert(
            f"COPY {table} ({column_list}) FROM STDIN WITH (FORMAT csv)", stream, COPY_READ_SIZE
        )
    except psycopg2.Error:
        if stream.error is not None:
            raise stream.error from None
        raise
