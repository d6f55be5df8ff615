"""The shape of a database's public schema, for tests that compare two of them."""

from __future__ import annotations

from typing import Any

_TABLES = ("JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
_QUERIES = {
    "constraints": "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
                   f"JOIN pg_class c ON c.oid = k.conrelid {_TABLES} ORDER BY 1, 2",
    "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
               "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
               "JOIN pg_class c ON c.oid = a.attrelid "
               "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
               f"{_TABLES} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
    "indexes": "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
               f"JOIN pg_class c ON c.oid = i.indrelid {_TABLES} ORDER BY 1, 2",
}


def schema_snapshot(cursor: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Return every public table's constraints (named), columns and indexes."""
    snapshot = {}
    for part, query in _QUERIES.items():
        cursor.execute(query)
        snapshot[part] = cursor.fetchall()
    return snapshot
