"""Click parameter types shared by the CLI's commands."""

from __future__ import annotations

import uuid
from typing import Any

import click


class UuidText(click.ParamType):
    """An id argument: checked to be a UUID, passed on as its canonical text."""

    name = "uuid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Return ``value`` as canonical UUID text, or fail as a usage error naming it."""
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            self.fail(f"{value!r} is not a UUID (like 6f1c2d3e-0000-4000-8000-000000000000)",
                      param, ctx)


UUID_TEXT = UuidText()
