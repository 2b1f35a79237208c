"""FHIRPath conditions compiled once per rule, with `now()` taken from the caller's clock."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import datetime
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import FP_DateTime
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

# fhirpathpy's own now() reads the wall clock; the demo and the simulator run on a simulated
# clock, so now()/today() are replaced by functions reading this context variable.
_NOW: contextvars.ContextVar[datetime] = contextvars.ContextVar("fhirpath_now")


def _now(_inputs: list[Any]) -> list[Any]:
    return [FP_DateTime(_NOW.get().isoformat())]  # type: ignore[no-untyped-call]


def _today(_inputs: list[Any]) -> list[Any]:
    return [FP_DateTime(_NOW.get().date().isoformat())]  # type: ignore[no-untyped-call]


_OPTIONS = {
    "userInvocationTable": {
        "now": {"fn": _now, "arity": {0: []}},
        "today": {"fn": _today, "arity": {0: []}},
    }
}


class FhirPathError(ValueError):
    """An expression that does not parse, or fails on a resource."""


class _RaisingListener(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, _recognizer: Any, _symbol: Any, line: int, column: int, msg: str,
                    _e: Any) -> None:
        raise FhirPathError(f"column {column + 1}: {msg}")


def check_syntax(source: str) -> None:
    """fhirpathpy hands grammar errors to a listener that ignores them, so a broken expression
    would compile and fail on the first resource. Parse it here with one that raises."""
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(source))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    trailing = tokens.LT(1)
    if trailing is not None and trailing.type != Token.EOF:
        raise FhirPathError(f"column {trailing.column + 1}: unexpected {trailing.text!r}")


def is_constant(source: str) -> bool:
    """True when the expression reads nothing (no element, variable or function): its value is
    the same for every resource, e.g. `false` or `1 > 2`."""
    lexer = FHIRPathLexer(InputStream(source))
    lexer.removeErrorListeners()
    reads = {FHIRPathLexer.IDENTIFIER, FHIRPathLexer.DELIMITEDIDENTIFIER}
    return not any(t.type in reads or t.text in ("%", "$this") for t in lexer.getAllTokens())


class Condition:
    """A compiled boolean FHIRPath expression; empty results count as false."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            check_syntax(source)
        except FhirPathError as exc:
            raise FhirPathError(f"FHIRPath does not parse: {source!r}: {exc}") from exc
        except Exception as exc:  # the ANTLR lexer raises its own errors on bad characters
            raise FhirPathError(f"FHIRPath does not parse: {source!r}: {exc}") from exc
        try:
            self._fn: Callable[..., list[Any]] = fhirpath_compile(source, models["r4"], _OPTIONS)
        except Exception as exc:  # fhirpathpy raises bare Exceptions from its ANTLR parser
            raise FhirPathError(f"FHIRPath does not parse: {source!r}: {exc}") from exc

    def __call__(
        self,
        resource: dict[str, Any],
        now: datetime,
        previous: dict[str, Any] | None = None,
    ) -> bool:
        token = _NOW.set(now)
        try:
            result = self._fn(resource, {"current": resource, "previous": previous or {}})
        except Exception as exc:
            raise FhirPathError(f"FHIRPath failed: {self.source!r}: {exc}") from exc
        finally:
            _NOW.reset(token)
        return bool(result) and all(item is True for item in result)
