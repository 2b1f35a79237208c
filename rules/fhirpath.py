"""FHIRPath conditions compiled once per rule, with `now()` taken from the caller's clock.

Each condition is compiled twice: by fhirpathpy (the reference, for any expression), and, when
the expression is inside the subset of rules/fhirpath_fast.py, to plain closures that give the
same answers ~50x faster. The fast path hands an evaluation back to fhirpathpy whenever the
data leaves the cases it handles exactly (`Bail`)."""

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
from fhirpathpy.parser import parse as fhirpath_parse
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from rules.fhirpath_fast import Bail, FastProgram, Unsupported, compile_fast, is_true

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


class SharedResults:
    """Condition results for one change, shared by the journeys whose conditions have the same
    source (50 journeys loaded from a few files repeat a handful of conditions). Only used for
    the exact resource, previous version and clock it was made for (compared by identity)."""

    __slots__ = ("now", "previous", "resource", "results")

    def __init__(self, resource: dict[str, Any], previous: dict[str, Any] | None,
                 now: datetime) -> None:
        self.resource, self.previous, self.now = resource, previous, now
        self.results: dict[str, bool] = {}


def _compile_fast(source: str, compiled: Any) -> FastProgram | None:
    # fhirpathpy's compiled function keeps its parse tree; reuse it rather than parse again.
    tree = getattr(compiled, "parsedPath", None)
    if tree is None:
        tree = fhirpath_parse(source)  # type: ignore[no-untyped-call]
    try:
        return compile_fast(tree)
    except Unsupported:
        return None


class Condition:
    """A compiled boolean FHIRPath expression; empty results count as false."""

    __slots__ = ("_fast", "_fn", "source")

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
        self._fast = _compile_fast(source, self._fn)

    @property
    def compiled(self) -> bool:
        """Whether the expression runs on the fast path (else always on fhirpathpy)."""
        return self._fast is not None

    def __call__(
        self,
        resource: dict[str, Any],
        now: datetime,
        previous: dict[str, Any] | None = None,
        shared: SharedResults | None = None,
    ) -> bool:
        if shared is not None and shared.resource is resource and shared.previous is previous \
                and shared.now is now:
            known = shared.results.get(self.source)
            if known is None:
                # A failing condition raises here and is not remembered: each journey reports it.
                known = shared.results[self.source] = self(resource, now, previous)
            return known
        if self._fast is not None:
            try:
                return is_true(self._fast.run(resource, previous, now))
            except Bail:
                pass  # data the fast path does not handle exactly: ask fhirpathpy
        return is_true(self.evaluate_reference(resource, now, previous))

    def evaluate(
        self, resource: dict[str, Any], now: datetime, previous: dict[str, Any] | None = None,
    ) -> list[Any]:
        """The raw result collection, from the fast path when it can answer."""
        if self._fast is not None:
            try:
                return self._fast.run(resource, previous, now)
            except Bail:
                pass
        return self.evaluate_reference(resource, now, previous)

    def evaluate_reference(
        self, resource: dict[str, Any], now: datetime, previous: dict[str, Any] | None = None,
    ) -> list[Any]:
        """The raw result collection from fhirpathpy alone (the reference and the fallback)."""
        token = _NOW.set(now)
        try:
            # `%resource` is the resource itself (FHIRPath); fhirpathpy only sets `%context`.
            context = {"current": resource, "previous": previous or {}, "resource": resource}
            result: list[Any] = self._fn(resource, context)
        except Exception as exc:
            raise FhirPathError(f"FHIRPath failed: {self.source!r}: {exc}") from exc
        finally:
            _NOW.reset(token)
        return result
