"""The Jinja2 sandbox tenant templates run in, with output and time limits.

``ImmutableSandboxedEnvironment`` blocks attribute escapes (``__class__``,
``mro``...) and mutation of lists and dicts. On top of it:

- output is counted chunk by chunk and refused past ``max_output_chars``;
- render time is checked at every call, every loop iteration (each ``for``
  iterable is wrapped by an AST transform) and every output chunk, so a loop
  or a call chain past ``max_render_seconds`` stops with an error. The check
  is cooperative: one single builtin call cannot be interrupted, which is why
  the operations that can make one huge value are bounded instead (``*`` and
  ``**`` on strings, lists and big ints, ``%`` and ``str.format`` widths,
  ``center``/``ljust``/``rjust``/``zfill``/``replace``, the ``format``,
  ``center``, ``indent`` and ``slice`` filters; ``lipsum`` is removed);
- undefined names render empty and chain (``contact.address.city`` with no
  address is empty, never a crash mid-campaign).

Errors become ``ValidationError`` naming the field and the template line.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import CodeType
from typing import Any

from jinja2 import ChainableUndefined, Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import do_center, do_format, do_indent, do_join, do_slice
from jinja2.sandbox import ImmutableSandboxedEnvironment

from swiftmail_core.errors import ValidationError

_MAX_INT_BITS = 4096
_MAX_WIDTH = 10_000
_MAX_VALUE_CHARS = 4_000_000  # no single string or list built in a template exceeds this
_BIG_WIDTH = re.compile(r"%[-#0 +]*(?:\*|\d{5,})|\{[^{}]*:[^{}]*(?:\{|\d{5,})")
_SIZED_STR_METHODS = {"center", "ljust", "rjust", "zfill"}


@dataclasses.dataclass(frozen=True)
class RenderLimits:
    """Per-field limits for one render."""

    max_output_chars: int = 2_000_000
    max_render_seconds: float = 2.0


class RenderLimitExceeded(SecurityError):
    """A render went past its output size or time limit."""


class _BoundedCodeGenerator(CodeGenerator):
    """Compile ``a ~ b`` so its result passes ``environment.bounded``."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded(")
        super().visit_Concat(node, frame)
        self.write(")")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > _MAX_VALUE_CHARS:
        raise SecurityError("value too large")
    return value


class _Budget(threading.local):
    deadline: float = float("inf")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """The sandboxed environment; one for HTML (autoescape) and one for text."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, autoescape: bool, **options: Any) -> None:
        super().__init__(autoescape=autoescape, undefined=ChainableUndefined, **options)
        self.budget = _Budget()
        self.globals.pop("lipsum", None)
        self.globals["_sm_iter"] = self._guarded_iter
        self.filters["center"] = _bounded_filter(do_center, "width")
        self.filters["indent"] = _bounded_filter(do_indent, "width")
        self.filters["slice"] = _bounded_filter(do_slice, "slices")
        self.filters["format"] = _checked_format_filter
        self.filters["join"] = _bounded_join_filter

    @staticmethod
    def bounded(value: Any) -> Any:
        """Return ``value`` unless it is too large (used for ``~``)."""
        return _check_size(value)

    # Limits ------------------------------------------------------------
    def check_deadline(self) -> None:
        """Raise when the current render is past its time limit."""
        if time.monotonic() > self.budget.deadline:
            raise RenderLimitExceeded("template took too long to render")

    def _guarded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = self.budget
        for item in iterable:
            if time.monotonic() > budget.deadline:
                raise RenderLimitExceeded("template took too long to render")
            yield item

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from sandboxed code, checking time and size-making str methods."""
        __self.check_deadline()
        if isinstance(getattr(__obj, "__self__", None), str):
            args = _check_str_method(__obj.__self__, __obj.__name__, args)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse ``*``, ``**`` and ``%`` that would build a huge value."""
        self.check_deadline()
        if operator == "+":
            return _check_size(left + right)
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    if len(seq) * count > _MAX_WIDTH * 10:
                        raise SecurityError("repetition result too large")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                    raise SecurityError("number too large")
            return left * right
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int):
                if right > 0 and max(left.bit_length(), 1) * right > _MAX_INT_BITS:
                    raise SecurityError("number too large")
            return left**right
        if isinstance(left, str) and _BIG_WIDTH.search(left):
            raise SecurityError("format width too large")
        return left % right

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Let data keys win over dict methods (``contact.items`` is an attribute)."""
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Refuse unsafe attribute access outright (not a silent empty value)."""
        raise SecurityError(f"access to attribute {attribute!r} is not allowed")

    def wrap_str_format(self, value: Any) -> Any:
        """Refuse ``str.format`` specs with huge or nested widths."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _BIG_WIDTH.search(value.__self__):
            raise SecurityError("format width too large")
        return wrapped

    # Every {% for %} iterates through _sm_iter (deadline checked per item).
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.Name("_sm_iter", "load", lineno=loop.lineno),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.lineno,
            )
        return tree

    # Compile and render ---------------------------------------------------
    def compile_field(self, field: str, source: str) -> Template:
        """Compile ``source``; a syntax error names ``field`` and the line."""
        try:
            code = self.compile(source)
        except TemplateSyntaxError as ex:
            raise ValidationError.for_field(field, f"line {ex.lineno}: {ex.message}") from ex
        template = self.template_class.from_code(self, code, self.make_globals(None))
        template.swiftmail_code = code  # type: ignore[attr-defined]
        return template

    def check_syntax(self, field: str, source: str) -> None:
        """Parse ``source`` only; a syntax error names ``field`` and the line."""
        try:
            self.parse(source)
        except TemplateSyntaxError as ex:
            raise ValidationError.for_field(field, f"line {ex.lineno}: {ex.message}") from ex

    def render_field(
        self, field: str, template: Template, context: dict[str, Any], limits: RenderLimits
    ) -> str:
        """Render within ``limits``; any failure names ``field`` and the line."""
        self.budget.deadline = time.monotonic() + limits.max_render_seconds
        parts: list[str] = []
        size = 0
        try:
            try:
                for chunk in template.root_render_func(template.new_context(context)):
                    size += len(chunk)
                    if size > limits.max_output_chars:
                        raise RenderLimitExceeded(
                            f"output larger than {limits.max_output_chars} characters"
                        )
                    parts.append(chunk)
                self.check_deadline()
            except Exception:
                self.handle_exception()  # re-raises with template line numbers
        except Exception as ex:
            raise _field_error(field, ex) from ex
        finally:
            self.budget.deadline = float("inf")
        return "".join(parts)

    def literal_strings(self, template: Template) -> set[str]:
        """Return every string constant of a ``compile_field`` template's code.

        The literal HTML/text a template yields is among these: the same
        constant every render, so its encoding can be computed once.
        """
        found: set[str] = set()
        stack: list[CodeType] = [template.swiftmail_code]  # type: ignore[attr-defined]
        while stack:
            code = stack.pop()
            for constant in code.co_consts:
                if isinstance(constant, str):
                    found.add(constant)
                elif isinstance(constant, CodeType):
                    stack.append(constant)
        return found

    def render_field_encoded(
        self,
        field: str,
        template: Template,
        context: dict[str, Any],
        limits: RenderLimits,
        literals: Mapping[str, bytes | tuple[bytes | str, ...]],
        encode_many: Callable[[list[str]], list[bytes]],
        joiner: bytes,
        slots: Mapping[str, bytes] | None = None,
        fill: Callable[[str], str] | None = None,
    ) -> tuple[bytes, bool]:
        """Render straight to an encoding: literals pre-encoded, the rest at once.

        A chunk found in ``literals`` uses its pre-encoded bytes, or its
        pre-encoded pieces, where a ``str`` piece stands for ``slots[piece]``
        (a tracked link's encoded URL); consecutive other chunks form a run,
        each run passed through ``fill`` if given, and all runs are encoded
        by one ``encode_many`` call. Pieces are joined with ``joiner`` (a
        quoted-printable soft line break, so each piece starts a line).
        Returns the bytes and whether the text ended with a line break.
        Limits and errors as ``render_field``.
        """
        self.budget.deadline = time.monotonic() + limits.max_render_seconds
        pieces: list[bytes | int] = []
        runs: list[str] = []
        dynamic: list[str] = []
        size = 0
        last = ""
        max_chars, literal = limits.max_output_chars, literals.get  # NOTE: locals: per chunk
        try:
            try:
                for chunk in template.root_render_func(template.new_context(context)):
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_chars:
                        raise RenderLimitExceeded(f"output larger than {max_chars} characters")
                    last = chunk
                    encoded = literal(chunk)
                    if encoded is None:
                        dynamic.append(chunk)
                    else:
                        if dynamic:
                            pieces.append(len(runs))
                            runs.append("".join(dynamic))
                            dynamic = []
                        if encoded.__class__ is bytes:
                            pieces.append(encoded)
                        else:
                            pieces += [piece if piece.__class__ is bytes else slots[piece]  # type: ignore[index]
                                       for piece in encoded]
                if dynamic:
                    pieces.append(len(runs))
                    runs.append("".join(dynamic))
                self.check_deadline()
            except Exception:
                self.handle_exception()  # re-raises with template line numbers
        except Exception as ex:
            raise _field_error(field, ex) from ex
        finally:
            self.budget.deadline = float("inf")
        if fill is not None:
            runs = [fill(run) for run in runs]
        encoded_runs = encode_many(runs) if runs else []
        joined = joiner.join(
            [encoded_runs[piece] if piece.__class__ is int else piece for piece in pieces]  # type: ignore[misc]
        )
        return joined, last.endswith("\n")


def _field_error(field: str, ex: Exception) -> ValidationError:
    line = _template_line(ex)
    where = f"line {line}: " if line else ""
    return ValidationError.for_field(field, f"{where}{_describe(ex)}")


def _describe(ex: Exception) -> str:
    if isinstance(ex, RenderLimitExceeded):
        return str(ex)
    if isinstance(ex, SecurityError):
        return f"not allowed in a template: {ex}"
    return f"{type(ex).__name__}: {ex}"


def _template_line(ex: BaseException) -> int | None:
    line = None
    tb = ex.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _check_str_method(target: str, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if name in _SIZED_STR_METHODS and args and isinstance(args[0], int):
        if args[0] > _MAX_WIDTH:
            raise SecurityError(f"str.{name} width too large")
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        growth = (len(new) - len(old)) * (target.count(old) if old else len(target) + 1)
        if len(target) + growth > _MAX_WIDTH * 100:
            raise SecurityError("str.replace result too large")
    elif name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], (list, tuple)) else args[0]
        total = sum(len(item) for item in items if isinstance(item, str))
        if total + len(target) * len(items) > _MAX_VALUE_CHARS:
            raise SecurityError("str.join result too large")
        args = (items, *args[1:])
    elif name == "expandtabs" and args and isinstance(args[0], int) and args[0] > 64:
        raise SecurityError("str.expandtabs size too large")
    return args


def _bounded_filter(filter_function: Any, argument: str) -> Any:
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        size = args[0] if args else kwargs.get(argument)
        if isinstance(size, int) and size > _MAX_WIDTH:
            raise SecurityError(f"{argument} too large")
        return filter_function(value, *args, **kwargs)

    bounded.__name__ = filter_function.__name__
    return bounded


def _bounded_join_filter(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    total = sum(len(str(item)) for item in items) + len(d) * len(items)
    if total > _MAX_VALUE_CHARS:
        raise SecurityError("join result too large")
    return do_join(eval_ctx, items, d, attribute)


_bounded_join_filter.jinja_pass_arg = do_join.jinja_pass_arg  # type: ignore[attr-defined]


def _checked_format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    if _BIG_WIDTH.search(str(value)):
        raise SecurityError("format width too large")
    return do_format(value, *args, **kwargs)
