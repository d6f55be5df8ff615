"""Open an uploaded CSV (plain or gzip) as a stream of rows, never whole."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from swiftmail_core.errors import ValidationError
from swiftmail_core.imports.limits import ImportLimits

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 16
MAX_HEADER_CHARS = 1 << 16
DELIMITERS = (",", ";", "\t", "|")


class _CountingReader(io.RawIOBase):
    """Count the bytes read through a binary stream; enforce a cap."""

    def __init__(self, raw: BinaryIO, limit: int | None, limits: ImportLimits) -> None:
        self.raw = raw
        self.count = 0
        self.limit = limit
        self.limits = limits
        self.saw_nul = False  # a cheap C-speed scan so rows are searched only when needed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        if data and not self.saw_nul and b"\x00" in data:
            self.saw_nul = True
        size = len(data)
        buffer[:size] = data
        self.count += size
        if self.limit is not None and self.count > self.limit:
            raise self.limits.too_big()
        return size


class CsvSource:
    """Rows of a CSV file streamed from a binary file object.

    ``bytes_read`` is how much of the *stored* file (compressed, for gzip)
    has been consumed: the job's progress against ``size``.
    """

    def __init__(self, raw: BinaryIO, limits: ImportLimits, size: int | None = None) -> None:
        self.limits = limits
        self.size = size
        self._outer = _CountingReader(raw, limits.max_bytes, limits)
        buffered = io.BufferedReader(self._outer, CHUNK)
        self.compressed = buffered.peek(2)[:2] == GZIP_MAGIC
        inner: io.BufferedReader[Any] = buffered
        self._plain = self._outer
        if self.compressed:
            self._inner = _CountingReader(
                gzip.GzipFile(fileobj=buffered, mode="rb"),  # type: ignore[arg-type]
                limits.max_bytes, limits,
            )
            inner = io.BufferedReader(self._inner, CHUNK)
            self._plain = self._inner
        self._text = io.TextIOWrapper(inner, encoding="utf-8-sig", newline="")
        # csv's own per-field cap, a backstop for one huge cell (a missing quote).
        csv.field_size_limit(max(limits.max_field_length * 4, 131072))
        self.header: list[str] = []
        self._reader: Iterator[list[str]] | None = None

    @property
    def may_contain_nul(self) -> bool:
        """Return True once the decompressed text read so far held a NUL byte."""
        return self._plain.saw_nul

    @property
    def bytes_read(self) -> int:
        """Return bytes of the stored file consumed so far."""
        return self._outer.count

    def open(self) -> list[str]:
        """Read and return the header row; pick the delimiter from it."""
        try:
            first = self._text.readline(MAX_HEADER_CHARS)
        except UnicodeDecodeError as ex:
            raise _not_utf8() from ex
        except (OSError, EOFError, zlib.error) as ex:
            raise ValidationError.for_field("file", f"is not a readable gzip file ({ex})") from ex
        if not first.strip():
            raise ValidationError.for_field("file", "is empty: the first row must be a header")
        if len(first) >= MAX_HEADER_CHARS and not first.endswith("\n"):
            raise ValidationError.for_field(
                "file", f"has a header row longer than {MAX_HEADER_CHARS:,} characters: "
                "is it a CSV file?"
            )
        delimiter = max(DELIMITERS, key=first.count)
        header_rows = list(csv.reader([first], delimiter=delimiter))
        header = [cell.strip() for cell in header_rows[0]] if header_rows else []
        if len(header) > self.limits.max_columns:
            raise self.limits.too_many_columns(len(header))
        self.header = header
        self._reader = csv.reader(self._text, delimiter=delimiter)
        return header

    def rows(self) -> Iterator[list[str]]:
        """Yield data rows; turn decoding and CSV errors into ValidationError."""
        assert self._reader is not None, "call open() first"
        reader = self._reader
        try:
            yield from reader
        except UnicodeDecodeError as ex:
            raise _not_utf8() from ex
        except csv.Error as ex:
            raise ValidationError.for_field(
                "file", f"is not valid CSV near line {reader.line_num + 1}: {ex}"  # type: ignore[attr-defined]
            ) from ex
        except (OSError, EOFError, zlib.error) as ex:
            raise ValidationError.for_field("file", f"could not be read to the end ({ex})") from ex


def _not_utf8() -> ValidationError:
    return ValidationError.for_field("file", "is not UTF-8 text: save the CSV as UTF-8")

