"""Migrations run statement by statement: the splitter keeps every body whole."""

from __future__ import annotations

import pytest

from swiftmail_core.db.migrate import available_migrations
from swiftmail_core.db.statements import split_statements


def test_semicolons_end_statements_only_outside_quotes_and_comments() -> None:
    script = ("-- header; not a statement\n"
              "SELECT ';', 'it''s;', E'\\';', \"odd;\"\"name\" /* a; /* nested; */ b; */ ;\n"
              "SELECT 2 -- trailing;\n;\n"
              "SELECT 3")
    assert split_statements(script) == [
        "SELECT ';', 'it''s;', E'\\';', \"odd;\"\"name\" /* a; /* nested; */ b; */ ;",
        "SELECT 2 -- trailing;\n;",
        "SELECT 3",
    ]


def test_dollar_quoted_bodies_and_parentheses_stay_whole() -> None:
    block = "DO $$\nBEGIN\n    PERFORM 1;\n    PERFORM 2;\nEND\n$$;"
    function = ("CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $fn$\n"
                "BEGIN RETURN '$$;'; END $fn$;")
    rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b);"
    other = "SELECT a$b$c, $1;"
    assert split_statements("\n".join([block, function, rule, other])) == [
        block, function, rule, other]


def test_a_sql_standard_function_body_stays_whole() -> None:
    function = ("CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql\n"
                "BEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 END;\n  SELECT 2;\nEND;")
    assert split_statements(function + "\nSELECT f(1);") == [function, "SELECT f(1);"]


@pytest.mark.parametrize("script", ["SELECT 'open", "SELECT \"open", "DO $$ BEGIN",
                                    "SELECT 1 /* open /* */"])
def test_an_unterminated_quote_or_comment_is_an_error(script: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements(script)


def test_every_migration_splits_into_its_statements() -> None:
    for migration in available_migrations():
        statements = split_statements(migration.text)
        assert statements, migration.name
        for statement in statements:
            assert statement.endswith(";"), (migration.name, statement)
            assert not statement.startswith("--"), (migration.name, statement)
            # A DO block or function body is never cut.
            assert statement.count("$$") % 2 == 0, (migration.name, statement)
