"""Escape CSV cells against spreadsheet formula injection.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is run as a formula by Excel, LibreOffice and Google Sheets. Such a
cell gets a leading apostrophe, which spreadsheets show as text (OWASP's
advice). The same rule exists twice: in Python for files we write row by row
(error reports), and as SQL for exports PostgreSQL writes with COPY.
"""

from __future__ import annotations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    """Return ``value`` made safe to open in a spreadsheet."""
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escaped_sql(expression: str) -> str:
    """Return SQL that applies ``escape_cell`` to a text ``expression``."""
    return (
        f"CASE WHEN left({expression}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') "
        f"THEN '''' || {expression} ELSE {expression} END"
    )
