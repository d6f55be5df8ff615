"""Split a PostgreSQL script into its statements, as psql does.

A semicolon ends a statement only outside string literals (``'...'``,
``E'...'``), quoted identifiers, comments (``--``, nested ``/* */``),
dollar-quoted bodies (``$$ ... $$``, ``$tag$ ... $tag$``), parentheses and
the ``BEGIN ... END`` body of ``CREATE [OR REPLACE] FUNCTION|PROCEDURE``
(psql's heuristic: ``CASE`` inside that body also ends with ``END``). So a
``DO`` block or a function body stays one statement.
"""

from __future__ import annotations

import re

# Alternatives are tried in order: an E string before a word, a dollar quote
# before a parameter ($1), a word swallowing the $ it may contain (a$b$ is a word).
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<word>[^\W\d]\w*(?:\$\w*)*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_COMMENT_MARK = re.compile(r"/\*|\*/")
_ROUTINE_STARTS = (("create", "function"), ("create", "procedure"),
                   ("create", "or", "replace", "function"),
                   ("create", "or", "replace", "procedure"))


def _block_comment_end(text: str, start: int) -> int:
    """Return the index after the (nested) comment opened at ``start``."""
    depth, position = 0, start
    while True:
        match = _COMMENT_MARK.search(text, position)
        if match is None:
            raise ValueError(f"unterminated /* comment at offset {start}")
        depth += 1 if match[0] == "/*" else -1
        position = match.end()
        if depth == 0:
            return position


def split_statements(text: str) -> list[str]:
    """Return the statements of ``text`` without comments or space around them.

    Each keeps its closing semicolon; a last statement without one is kept too.
    Raises ValueError on an unterminated quote, comment or dollar-quoted body.
    """
    statements: list[str] = []
    start: int | None = None  # offset of the current statement's first lexeme
    words: list[str] = []  # its first words, lower-cased, for CREATE FUNCTION
    parens = begins = 0
    position = code_end = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match is not None  # "other" matches any character
        kind, lexeme, end = match.lastgroup, match[0], match.end()
        if kind == "block_comment":
            end = _block_comment_end(text, position)
        elif kind == "dollar":
            closing = text.find(lexeme, end)
            if closing < 0:
                raise ValueError(f"unterminated dollar-quoted string at offset {position}")
            end = closing + len(lexeme)
        elif kind == "other" and lexeme in "'\"":
            raise ValueError(f"unterminated quoted string at offset {position}")
        if kind in ("space", "line_comment", "block_comment"):
            position = end
            continue
        if start is None:
            start, words, parens, begins = position, [], 0, 0
        if kind == "word":
            word = lexeme.lower()
            if len(words) < 4:
                words.append(word)
            if parens == 0 and any(tuple(words[:len(s)]) == s for s in _ROUTINE_STARTS):
                if word == "begin" or (word == "case" and begins):
                    begins += 1
                elif word == "end" and begins:
                    begins -= 1
        elif lexeme == "(":
            parens += 1
        elif lexeme == ")":
            parens = max(parens - 1, 0)
        elif lexeme == ";" and parens == 0 and begins == 0:
            statements.append(text[start:end])
            start = None
        position = code_end = end
    if start is not None:
        statements.append(text[start:code_end])
    return statements
