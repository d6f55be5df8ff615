"""Feed validated rows to PostgreSQL's COPY without building the file.

``RowStream`` is the file-like object ``cursor.copy_expert`` reads from:
each ``read`` turns the next batches of rows into COPY's text format (one
line per row, cells separated by tabs, an empty cell read as NULL). A batch
is joined at C speed and checked as a whole; only a batch that holds a tab,
a newline, a carriage return or a backslash inside a cell is escaped cell by
cell. The staging table is TEMP and dropped at commit; it lives inside the
tenant transaction, and COPY into it needs no RLS (COPY FROM into a table
with row-level security is not allowed; the set-based merge that follows
runs under the tenant policies).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import psycopg2

COPY_READ_SIZE = 1 << 20
# COPY's text format: what a cell must not hold raw, and how it is written instead.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_join_cells = "\t".join


def _escape(cell: str) -> str:
    for raw, escaped in _ESCAPES:
        if raw in cell:
            cell = cell.replace(raw, escaped)
    return cell


def copy_text(batch: Sequence[Sequence[str]]) -> str:
    """Return ``batch`` (rows of text cells, all rows as wide) as COPY text lines.

    An empty cell stands for NULL (``copy_into`` says ``NULL ''``).
    """
    if not batch:
        return ""
    text = "\n".join(map(_join_cells, batch)) + "\n"
    # NOTE: the common case costs three C-speed scans of the batch: the right
    # number of tabs and newlines and no backslash or CR means no cell holds one.
    if (text.count("\t") == len(batch) * (len(batch[0]) - 1)
            and text.count("\n") == len(batch) and "\\" not in text and "\r" not in text):
        return text
    return "".join(_join_cells(map(_escape, row)) + "\n" for row in batch)


class RowStream:
    """A readable text stream over an iterator of row batches (rows of str cells)."""

    def __init__(self, batches: Iterator[Sequence[Sequence[str]]]) -> None:
        self._batches = batches
        self._pending = ""
        self._offset = 0
        self._done = False
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> str:
        """Return up to ``size`` characters of COPY text ('' at the end)."""
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
            self._pending = self._pending[self._offset:] + copy_text(batch)
            self._offset = 0
        chunk = self._pending[self._offset:self._offset + size]
        self._offset += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> str:
        """Not used by COPY; present for file-like completeness."""
        return self.read(size)


class CopySource(Protocol):
    """What ``copy_into`` reads: text chunks, and the error that ended them, if any."""

    @property
    def error(self) -> BaseException | None:
        """The error that ended the text early, if one did."""

    def read(self, size: int = -1) -> str:
        """Return up to ``size`` characters ('' at the end)."""


def copy_into(cursor: Any, table: str, columns: Sequence[str], stream: CopySource) -> None:
    """COPY ``stream`` (text format, NULL as an empty cell) into ``table``."""
    column_list = ", ".join(columns)
    try:
        cursor.copy_expert(
            f"COPY {table} ({column_list}) FROM STDIN WITH (FORMAT text, NULL '')",
            stream, COPY_READ_SIZE,
        )
    except psycopg2.Error:
        if stream.error is not None:
            raise stream.error from None
        raise
