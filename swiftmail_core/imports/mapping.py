"""Map CSV columns to fields and attributes.

A mapping is ``COLUMN=TARGET`` where TARGET is a field (``email``,
``name``, ...), ``attributes.KEY`` for a contact attribute, or ``-`` to
ignore the column. Columns not mapped explicitly map by name: a known field
name or alias (``E-mail``, ``Full name``) maps to that field; with
attributes allowed, any other column becomes an attribute named after its
header; otherwise it is ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from swiftmail_core.errors import ValidationError

IGNORE = "-"
ATTRIBUTE_PREFIX = "attributes."
_ATTRIBUTE_KEY = re.compile(r"^[^\x00-\x1f]{1,64}$")
_ALIAS_CLEAN = re.compile(r"[\s_-]+")


def _alias_key(header: str) -> str:
    return _ALIAS_CLEAN.sub("", header.lower())


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """Where each target comes from: field -> column index, attribute -> index."""

    fields: dict[str, int]
    attributes: list[tuple[str, int]]
    column_count: int

    def describe(self, header: Sequence[str]) -> dict[str, str]:
        """Return ``{column: target}`` for the job's record."""
        described = {header[index]: field for field, index in self.fields.items()}
        described.update({header[index]: ATTRIBUTE_PREFIX + key for key, index in self.attributes})
        return described


def parse_map_options(items: Iterable[str]) -> dict[str, str]:
    """Parse ``COLUMN=TARGET`` strings (the CLI's ``--map``) into a dict."""
    parsed: dict[str, str] = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise ValidationError.for_field(
                "map", f"{item!r} is not COLUMN=TARGET (e.g. 'E-mail=email', 'City=attributes.city')"
            )
        parsed[column.strip()] = target.strip()
    return parsed


def resolve_mapping(
    header: Sequence[str],
    overrides: Mapping[str, str],
    aliases: Mapping[str, str],
    *,
    required: Sequence[str] = ("email",),
    allow_attributes: bool = True,
) -> ColumnMapping:
    """Resolve the header and explicit ``overrides`` into a ColumnMapping."""
    known_fields = set(aliases.values())
    positions: dict[str, int] = {}
    for index, column in enumerate(header):
        if column in positions:
            raise ValidationError.for_field(
                "file", f"the header has column {column!r} twice: rename one"
            )
        positions[column] = index
    for column, wanted in overrides.items():
        if column not in positions:
            raise ValidationError.for_field(
                "map", f"column {column!r} is not in the file's header ({', '.join(header)})"
            )
        if wanted != IGNORE and wanted not in known_fields and not (
            allow_attributes and wanted.startswith(ATTRIBUTE_PREFIX)
        ):
            choices = sorted(known_fields) + (["attributes.KEY"] if allow_attributes else [])
            raise ValidationError.for_field(
                "map", f"{wanted!r} is not a target: use one of {', '.join(choices)} or '-'"
            )
    fields: dict[str, int] = {}
    attributes: list[tuple[str, int]] = []

    def assign_field(field: str, index: int) -> None:
        if field in fields:
            raise ValidationError.for_field(
                "map",
                f"columns {header[fields[field]]!r} and {header[index]!r} both map to {field!r}",
            )
        fields[field] = index

    for index, column in enumerate(header):
        target: str | None = overrides.get(column) or aliases.get(_alias_key(column))
        if target is None:
            if not allow_attributes or not column:
                continue
            target = ATTRIBUTE_PREFIX + column
        if target == IGNORE:
            continue
        if target.startswith(ATTRIBUTE_PREFIX):
            key = target[len(ATTRIBUTE_PREFIX):]
            if not _ATTRIBUTE_KEY.match(key):
                raise ValidationError.for_field(
                    "map", f"attribute name {key!r} must be 1-64 printable characters"
                )
            if any(existing == key for existing, _ in attributes):
                raise ValidationError.for_field("map", f"two columns map to attribute {key!r}")
            attributes.append((key, index))
        else:
            assign_field(target, index)
    for field in required:
        if field not in fields:
            raise ValidationError.for_field(
                "map",
                f"no column maps to {field!r}: name a column {field!r} or map one with "
                f"--map COLUMN={field}",
            )
    return ColumnMapping(fields=fields, attributes=attributes, column_count=len(header))
