"""The limits every import enforces, with the errors they raise."""

from __future__ import annotations

import dataclasses

from swiftmail_core.errors import ValidationError


@dataclasses.dataclass(frozen=True)
class ImportLimits:
    """Caps on one import file; exceeding one fails the job with a clear error.

    ``max_bytes`` counts decompressed bytes (a gzip bomb stops there);
    ``max_field_length`` is per cell, in characters.
    """

    max_bytes: int = 1024 * 1024 * 1024
    max_rows: int = 5_000_000
    max_columns: int = 100
    max_field_length: int = 1000

    def too_big(self) -> ValidationError:
        """Return the error for a file over ``max_bytes``."""
        return ValidationError.for_field(
            "file",
            f"is larger than the {self.max_bytes:,}-byte import limit (after decompression): "
            "split it into smaller files",
        )

    def too_many_rows(self) -> ValidationError:
        """Return the error for a file over ``max_rows``."""
        return ValidationError.for_field(
            "file", f"has more than {self.max_rows:,} rows: split it into smaller files"
        )

    def too_many_columns(self, found: int) -> ValidationError:
        """Return the error for a header over ``max_columns``."""
        return ValidationError.for_field(
            "file",
            f"has {found} columns; at most {self.max_columns} are allowed: remove unused columns",
        )
