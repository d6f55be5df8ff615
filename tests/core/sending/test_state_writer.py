"""One owner of ``messages.status``: only ``sending/state.py`` writes it.

A grep-style check over the source (core, web, relay, plugins): an SQL
``UPDATE messages ... SET status`` or a peewee ``Message.update(status=...)``
anywhere else fails, naming the file and line. Creating a row with its first
status (``INSERT INTO messages``) is not a move and is allowed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ("swiftmail_core", "web", "relay", "plugins")
OWNER = Path("swiftmail_core/sending/state.py")
_UPDATE = re.compile(r"\bUPDATE\s+messages\b(?:\s+(?:AS\s+)?\w+)?\s+SET\b(?P<set>.*?)"
                     r"(?:\bWHERE\b|\bFROM\b|\bRETURNING\b|$)", re.IGNORECASE | re.DOTALL)
_STATUS = re.compile(r"(?:^|[\s,(])(?:\w+\.)?status\s*=", re.IGNORECASE)


def _text(node: ast.AST) -> str | None:
    """Return a string literal's text (an f-string's constant parts joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else " {} "
                       for part in node.values)
    return None


def _flatten(node: ast.AST) -> str | None:
    """Return the text of a string built with ``+`` from literals, else None."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _flatten(node.left), _flatten(node.right)
        return None if left is None and right is None else (left or " {} ") + (right or " {} ")
    return _text(node)


def _sets_status(call: ast.Call) -> bool:
    """Return whether a peewee ``Message.update(...)`` may set ``status``."""
    if any(keyword.arg in ("status", None) for keyword in call.keywords):
        return True
    for argument in call.args:  # Message.update({Message.status: ...}) or a dict built elsewhere
        if not isinstance(argument, ast.Dict):
            return True
        for key in argument.keys:
            if key is None or ast.unparse(key) in ("Message.status", "'status'", '"status"'):
                return True
    return False


def status_writes(source: str) -> Iterator[int]:
    """Yield the line of every statement in ``source`` that writes ``messages.status``."""
    tree = ast.parse(source)
    seen: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "update" and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "Message" and _sets_status(node):
            yield node.lineno
            continue
        text = _flatten(node)
        if text is None or node.lineno in seen:
            continue
        for found in _UPDATE.finditer(text):
            if _STATUS.search(found["set"]):
                seen.add(node.lineno)
                yield node.lineno
                break


def _modules() -> Iterator[Path]:
    for top in SOURCES:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_only_the_state_writer_writes_message_status() -> None:
    writers = [f"{path.relative_to(ROOT)}:{line}" for path in _modules()
               if path.relative_to(ROOT) != OWNER
               for line in status_writes(path.read_text(encoding="utf-8"))]
    assert writers == [], ("messages.status is written outside sending/state.py; add a named "
                           "move to state.MOVES and call it instead:\n" + "\n".join(writers))


def test_the_check_finds_status_writes() -> None:
    # The check itself: each shape a status write has taken in this code base.
    samples = [
        'db.execute_sql("UPDATE messages SET status = %s WHERE id = %s", (s, i))',
        'db.execute_sql("UPDATE messages m SET last_error = NULL, "\n'
        '               "status = \'held\' WHERE m.tenant_id = %s", (t,))',
        'db.execute_sql("/* x */ UPDATE messages SET " + cols + ", status = %s", ())',
        'db.execute_sql(f"UPDATE messages SET status = \'queued\' WHERE {guard}")',
        'Message.update(status="queued", attempts=0).where(Message.id == 1).execute()',
        'Message.update(**changes).execute()',
        'Message.update({Message.status: "held"}).execute()',
        'Message.update(changes).execute()',
    ]
    assert [len(list(status_writes(sample))) for sample in samples] == [1] * len(samples)
    assert list(status_writes(
        'db.execute_sql("UPDATE messages SET next_attempt_at = now() WHERE status = %s")')) == []
    assert list(status_writes('db.execute_sql("INSERT INTO messages (status) VALUES (%s)")')) == []
    assert list(status_writes('Message.update({Message.last_error: None}).execute()')) == []
    assert len(list(status_writes((ROOT / OWNER).read_text(encoding="utf-8")))) >= 8


@pytest.mark.parametrize("migration", ["0190_claim_function.sql", "0193_claim_plans.sql"])
def test_the_claim_function_makes_only_the_claim_moves_with_their_guards(migration: str) -> None:
    """The outbox claim's SQL function (migrations 0190, 0193) belongs to this writer.

    Each of its status writes is one of the claim's named moves (``park``,
    ``suppress``, ``lease``), ending rows in a status the move allows, and
    carries the move's guard (0193: as a sub-select, still on every row).
    """
    from swiftmail_core.sending.state import MOVES, _from

    sql = (ROOT / "swiftmail_core/migrations" / migration).read_text(encoding="utf-8")
    sql = sql[sql.index("CREATE "):]  # the function, not the header's prose
    statements = [part for part in sql.split(";") if _UPDATE.search(part)
                  and _STATUS.search(_UPDATE.search(part)["set"])]
    ends = MOVES["park"].end | MOVES["suppress"].end | MOVES["lease"].end
    assert len(statements) == 4
    for statement in statements:
        assert _from("park") == _from("suppress") == _from("lease")
        assert _from("lease") in " ".join(statement.split()), statement
        written = re.search(r"SET\s+status\s*=\s*'(\w+)'", statement)
        assert written is not None and written[1] in ends, statement
