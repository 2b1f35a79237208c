"""A subset of FHIRPath compiled to plain Python closures, answering exactly as fhirpathpy does.

fhirpathpy walks its parse tree on every evaluation and parses dateTimes with dateutil, which
costs ~200 µs per condition; rule matching evaluates ~13 conditions per change. This module
turns the expressions journeys actually use into closures over raw JSON values:

- member paths (`a.b.c`, flattening lists, `_a` primitive extensions included, a capitalised
  first step filtering by resourceType), `%current`, `%previous`, `%resource`, `%context`;
- string, number and boolean literals, `{}`, `@dateTime` literals, unions of literals;
- `=`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`, `in (literal | ...)`;
- `exists()`, `exists(criteria)`, `where(criteria)`, `empty()`, `count()`, `not()`, `now()`,
  `today()`.

The reference is fhirpathpy (what ran before, and what still runs for everything else), not the
FHIRPath specification: where the two differ (fhirpathpy compares two dateTime *elements* as
strings, `=` looks at first items only) this module does what fhirpathpy does, and the
differential tests in tests/rules/ hold it to that. Two escape hatches keep it exact:

- `Unsupported` at compile time: the expression is outside the subset and the caller keeps
  using fhirpathpy for it (decided once per expression).
- `Bail` at evaluation time: the data leaves the cases handled here (a dateTime of partial
  precision or without a time zone, a type mismatch fhirpathpy would raise on, a contained
  resource inside a path, a FHIR choice-type element...): the caller re-evaluates this one call
  with fhirpathpy, which gives the answer or raises the error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhirpathpy.engine import do_eval
from fhirpathpy.models import models

Tree = dict[str, Any]
# A compiled node: (input collection, evaluation environment) -> output collection.
Fn = Callable[[list[Any], "Env"], list[Any]]

_MODEL: dict[str, Any] = models["r4"]
_QUANTITY_PATHS = frozenset({"Quantity", "System.Quantity"})


class Unsupported(Exception):
    """The expression is outside the compiled subset: evaluate it with fhirpathpy."""


class Bail(Exception):
    """This evaluation leaves the exactly-handled cases: re-evaluate it with fhirpathpy."""


# dateTimes handled here: a full date, or a full instant to the second with a time zone. Anything
# else (partial precision, no zone, > 6 fraction digits) has fhirpathpy's precision rules and goes
# to fhirpathpy. Years are kept away from the edges where fhirpathpy's normalisation overflows.
_INSTANT = re.compile(
    r"[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"[1-9]\d{3}-\d{2}-\d{2}")
_INSTANT_KIND, _DATE_KIND = 1, 2


class Moment:
    """What fhirpathpy's FP_DateTime is for now(), today() and @ literals, reduced to the two
    shapes compared here. `stamp` is the float fhirpathpy compares (its _getDateTimeInt)."""

    __slots__ = ("kind", "stamp", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parsed = _parse_moment(text)
        self.kind, self.stamp = parsed if parsed is not None else (0, 0.0)

    def __repr__(self) -> str:
        return f"Moment({self.text!r})"


_PARSED: dict[str, tuple[int, float] | None] = {}


def _parse_moment(text: str) -> tuple[int, float] | None:
    """(kind, timestamp) for a full instant or date, else None. Cached: the same start times are
    compared by every journey listening to a change."""
    try:
        return _PARSED[text]
    except KeyError:
        pass
    parsed: tuple[int, float] | None = None
    try:
        if _INSTANT.fullmatch(text):
            # Aware: the same instant as dateutil's parse, so the same float timestamp.
            parsed = (_INSTANT_KIND, datetime.fromisoformat(text.replace("Z", "+00:00"))
                      .timestamp())
        elif _DATE.fullmatch(text):
            # fhirpathpy compares dates as the naive local midnight's timestamp: same here.
            parsed = (_DATE_KIND, datetime(int(text[:4]), int(text[5:7]), int(text[8:10]))
                      .timestamp())
    except (ValueError, OverflowError, OSError):
        parsed = None
    if len(_PARSED) > 8192:  # bounded: start times are per appointment
        _PARSED.clear()
    _PARSED[text] = parsed
    return parsed


class Env:
    """One evaluation's variables: the resource, `%previous` (never None) and the clock."""

    __slots__ = ("now", "previous", "resource")

    def __init__(self, resource: dict[str, Any], previous: dict[str, Any],
                 now: datetime) -> None:
        self.resource = resource
        self.previous = previous
        self.now = now


# The last clock value seen with its now() and today(), swapped as one tuple (thread-safe).
_CLOCK: list[tuple[Any, Moment, Moment]] = [(None, Moment(""), Moment(""))]


def _clock(now: datetime) -> tuple[Any, Moment, Moment]:
    # rules/fhirpath.py gives fhirpathpy now() = FP_DateTime(now.isoformat()) and today() =
    # FP_DateTime(now.date().isoformat()); the same texts here, computed once per clock value.
    entry = _CLOCK[0]
    if entry[0] is not now:
        entry = (now, Moment(now.isoformat()), Moment(now.date().isoformat()))
        _CLOCK[0] = entry
    return entry


# ----------------------------------------------------------------------------- intermediate form

@dataclass(frozen=True)
class Node:
    """One operation of the compiled subset (see the subclasses)."""


@dataclass(frozen=True)
class Input(Node):
    """The input collection: the resource at the top, an item inside exists()/where()."""


@dataclass(frozen=True)
class Var(Node):
    name: str  # current, previous, resource, context


@dataclass(frozen=True)
class Member(Node):
    source: Node
    key: str


@dataclass(frozen=True)
class Const(Node):
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Clock(Node):
    today: bool


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Equal(Node):
    negate: bool
    left: Node
    right: Node


@dataclass(frozen=True)
class In(Node):
    left: Node
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Logic(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Func(Node):
    name: str  # exists, empty, count, not
    source: Node


@dataclass(frozen=True)
class Filter(Node):
    exists: bool  # exists(criteria) when true, where(criteria) otherwise
    source: Node
    criteria: Node


_BOOLEAN_NODES = (Compare, Equal, In, Logic)
_VARS = frozenset({"current", "previous", "resource", "context"})
_LITERAL_TYPES = frozenset({"TermExpression", "LiteralTerm", "StringLiteral", "NumberLiteral",
                            "BooleanLiteral", "NullLiteral", "ParenthesizedTerm",
                            "UnionExpression", "PolarityExpression"})


def _is_boolean(node: Node) -> bool:
    """Whether every value the node yields is a Python bool (so truthiness is FHIRPath truth)."""
    if isinstance(node, _BOOLEAN_NODES):
        return True
    if isinstance(node, Func):
        return node.name != "count"
    if isinstance(node, Filter):
        return node.exists
    return isinstance(node, Const) and all(type(v) is bool for v in node.values)


def _literal_only(tree: Tree) -> bool:
    return tree.get("type") in _LITERAL_TYPES and all(
        _literal_only(child) for child in tree.get("children") or [])


def _fold(tree: Tree) -> Const:
    """A literal subtree, evaluated by fhirpathpy itself so number and union rules match."""
    ctx = {"dataRoot": [], "vars": {}, "model": _MODEL, "userInvocationTable": {}}
    try:
        values = do_eval(ctx, [], tree)  # type: ignore[no-untyped-call]
    except Exception as exc:  # e.g. `-'a'`: fhirpathpy raises on every evaluation
        raise Unsupported(f"literal raises: {exc}") from exc
    if not all(type(v) in (str, int, bool, Decimal) for v in values):
        raise Unsupported("literal of another type")
    return Const(tuple(values))


def _text(tree: Tree) -> str:
    text: str = tree["text"]
    return text


def _identifier(tree: Tree) -> str:
    # fhirpathpy strips surrounding double quotes, then every backtick.
    return re.sub(r"(^\"|\"$)", "", _text(tree)).replace("`", "")


def _children(tree: Tree) -> list[Tree]:
    children: list[Tree] = tree.get("children") or []
    return children


def _op(tree: Tree) -> str:
    op: str = tree["terminalNodeText"][0]
    return op


class _Converter:
    """fhirpathpy's parse tree -> Node, raising Unsupported outside the subset."""

    def __init__(self) -> None:
        self.criteria_depth = 0

    def expression(self, tree: Tree) -> Node:
        kind = tree.get("type")
        kids = _children(tree)
        if _literal_only(tree):
            return _fold(tree)
        if kind in ("TermExpression", "ParenthesizedTerm") and len(kids) == 1:
            return self.expression(kids[0])
        if kind == "LiteralTerm" and kids and kids[0].get("type") == "DateTimeLiteral":
            text = _text(kids[0])[1:]
            moment = Moment(text)
            if moment.kind == 0:
                raise Unsupported(f"dateTime literal of partial precision: {text}")
            return Const((moment,))
        if kind == "InvocationTerm":
            return self.invocation(kids[0], Input())
        if kind == "ExternalConstantTerm":
            name = _identifier(_children(kids[0])[0])
            if name not in _VARS:
                raise Unsupported(f"%{name}")
            return Var(name)
        if kind == "InvocationExpression":
            return self.invocation(kids[1], self.expression(kids[0]))
        if kind in ("EqualityExpression", "InequalityExpression", "AndExpression",
                    "OrExpression", "MembershipExpression"):
            return self.binary(kind, _op(tree), kids)
        raise Unsupported(f"{kind} is not compiled")

    def binary(self, kind: str, op: str, kids: list[Tree]) -> Node:
        if kind == "MembershipExpression":
            if op != "in" or not _literal_only(kids[1]):
                raise Unsupported(f"{op} with a non-literal right side")
            left = self.expression(kids[0])
            if isinstance(left, Clock | Const):
                raise Unsupported("in on a literal")
            return In(left, _fold(kids[1]).values)
        left, right = self.expression(kids[0]), self.expression(kids[1])
        if kind == "EqualityExpression" and op in ("=", "!="):
            return Equal(op == "!=", left, right)
        if kind == "InequalityExpression":
            return Compare(op, left, right)
        if kind in ("AndExpression", "OrExpression") and op in ("and", "or"):
            return Logic(op, left, right)
        raise Unsupported(f"operator {op}")

    def invocation(self, tree: Tree, source: Node) -> Node:
        kind = tree.get("type")
        if kind == "MemberInvocation":
            if not isinstance(source, Input | Var | Member | Filter) or \
                    (isinstance(source, Filter) and source.exists):
                raise Unsupported("member of a computed value")
            return Member(source, _identifier(_children(tree)[0]))
        if kind == "ThisInvocation":
            # Inside exists()/where(), `$this` is the item, like the criteria's input.
            if self.criteria_depth == 0 or not isinstance(source, Input):
                raise Unsupported("$this outside a criteria")
            return Input()
        if kind != "FunctionInvocation":
            raise Unsupported(f"{kind} is not compiled")
        functn = _children(tree)[0]
        parts = _children(functn)
        name = _identifier(parts[0])
        params = _children(parts[1]) if len(parts) > 1 else []
        if name in ("now", "today") and not params and isinstance(source, Input):
            return Clock(name == "today")
        if name in ("exists", "empty", "count", "not") and not params:
            return Func(name, source)
        if name in ("exists", "where") and len(params) == 1:
            self.criteria_depth += 1
            try:
                criteria = self.expression(params[0])
            finally:
                self.criteria_depth -= 1
            if not _is_boolean(criteria):
                # fhirpathpy keeps an item when the criteria's first value is truthy in Python,
                # which equals FHIRPath truth only for booleans.
                raise Unsupported("criteria that is not boolean")
            return Filter(name == "exists", source, criteria)
        raise Unsupported(f"function {name}()")


# ------------------------------------------------------------ per resource type: the model paths

# A step's path in the FHIR model, as fhirpathpy tracks it: it picks choice-type elements
# (valueQuantity for `value`) and treats `Quantity`-typed items specially in `=`. The paths
# depend on the resource's type only, so each expression is checked once per type.
Shape = tuple[Any, bool]  # (model path or None, items are the raw resource dicts)


def _child_path(parent: Any, key: str) -> str | None:
    """The model path of `parent.key`, or None when it is a choice type (not compiled)."""
    path = f"{parent}.{key}" if parent else f"_.{key}"
    path = _MODEL["pathsDefinedElsewhere"].get(path, path)
    if _MODEL["choiceTypePaths"].get(path):
        return None
    if key == "extension":
        path = "Extension"
    mapped: str = _MODEL["path2Type"].get(path, path)
    return mapped


def _check(node: Node, shape: Shape, roots: dict[str, Shape]) -> Shape:
    """The shape of the node's output, raising Unsupported where the model makes fhirpathpy
    behave differently from plain JSON navigation."""
    if isinstance(node, Input):
        return shape
    if isinstance(node, Var):
        return roots[node.name]
    if isinstance(node, Member):
        parent, raw = _check(node.source, shape, roots)
        if raw and node.key[:1] == node.key[:1].upper():
            return (node.key, False)  # a resourceType filter: the items keep their type
        path = _child_path(parent, node.key)
        if path is None:
            raise Unsupported(f"choice-type element {parent}.{node.key}")
        return (path, False)
    if isinstance(node, Filter):
        items = _check(node.source, shape, roots)
        _check(node.criteria, items, roots)
        return items if not node.exists else (None, False)
    if isinstance(node, Func):
        _check(node.source, shape, roots)
    elif isinstance(node, In):
        _check(node.left, shape, roots)
    elif isinstance(node, Compare | Logic | Equal):
        for side in (node.left, node.right):
            path, raw = _check(side, shape, roots)
            if isinstance(node, Equal) and not raw and path in _QUANTITY_PATHS:
                raise Unsupported("= on a Quantity")
    return (None, False)


# --------------------------------------------------------------------------------- evaluation

def _root(name: str) -> Fn:
    if name == "previous":
        return lambda _data, env: [env.previous]
    return lambda _data, env: [env.resource]


def _member(source: Fn, key: str, raw: bool) -> Fn:
    extension_key = "_" + key
    if raw and key[:1] == key[:1].upper():
        def by_type(data: list[Any], env: Env) -> list[Any]:
            items = source(data, env)
            if any("resourceType" not in item for item in items):
                raise Bail  # fhirpathpy raises KeyError
            return [item for item in items if item["resourceType"] == key]
        return by_type

    def member(data: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in source(data, env):
            if type(item) is dict:
                if not raw and "resourceType" in item:
                    raise Bail  # a contained resource: the model path restarts there
                for name in (key, extension_key):
                    value = item.get(name)
                    if value is not None:
                        if isinstance(value, list):
                            out.extend(value)
                        else:
                            out.append(value)
            elif key == "length" or isinstance(item, Mapping):
                raise Bail  # fhirpathpy takes len() of the value
        return out
    return member


def _as_moment(value: Any) -> Moment:
    """The other side of a dateTime comparison, as fhirpathpy converts it (strings only)."""
    if type(value) is Moment:
        moment = value
    elif type(value) is str:
        parsed = _parse_moment(value)
        if parsed is None:
            raise Bail
        return _parsed_moment(value, parsed)
    else:
        raise Bail
    if moment.kind == 0:
        raise Bail
    return moment


def _parsed_moment(text: str, parsed: tuple[int, float]) -> Moment:
    moment = Moment.__new__(Moment)
    moment.text, (moment.kind, moment.stamp) = text, parsed
    return moment


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def _is_number(value: Any) -> bool:
    return type(value) in (int, Decimal)


def _compare(op: str, left: Any, right: Any) -> bool:
    # fhirpathpy's typecheck(): floats become Decimals; a string meets a dateTime as a dateTime;
    # otherwise the classes must match (or both be numbers), else it raises.
    if type(left) is float:
        left = Decimal(str(left))
    if type(right) is float:
        right = Decimal(str(right))
    if type(left) is Moment or type(right) is Moment:
        a, b = _as_moment(left), _as_moment(right)
        if a.kind != b.kind:
            raise Bail  # different precisions: fhirpathpy's partial-precision rules
        return _ordered(op, a.stamp, b.stamp)
    if type(left) is not type(right) and not (_is_number(left) and _is_number(right)):
        raise Bail
    try:
        return _ordered(op, left, right)
    except Exception as exc:  # unorderable (dicts, None, NaN): fhirpathpy raises
        raise Bail from exc


def _compare_fn(op: str, left: Fn, right: Fn) -> Fn:
    def compare(data: list[Any], env: Env) -> list[Any]:
        a, b = left(data, env), right(data, env)
        if not a or not b:
            return []
        if len(a) != 1 or len(b) != 1:
            raise Bail  # fhirpathpy raises, or drops a trailing extension
        return [_compare(op, a[0], b[0])]
    return compare


def _equal(a: list[Any], b: list[Any]) -> bool:
    first, second = a[0], b[0]
    if type(first) is Moment or type(second) is Moment:
        # fhirpathpy's datetime_equality: first items only, strings converted to dateTimes.
        x, y = _as_moment(first), _as_moment(second)
        if x.kind != y.kind:
            raise Bail
        return x.stamp == y.stamp
    if len(a) != len(b):
        return False
    for item in (first, second):
        if type(item) is dict and item.get("resourceType") in _QUANTITY_PATHS:
            raise Bail
    return bool(first == second)


def _equal_fn(negate: bool, left: Fn, right: Fn) -> Fn:
    def equal(data: list[Any], env: Env) -> list[Any]:
        a, b = left(data, env), right(data, env)
        if not a or not b:
            return []
        return [_equal(a, b) is not negate]
    return equal


def _in_fn(left: Fn, values: tuple[Any, ...]) -> Fn:
    def member_of(data: list[Any], env: Env) -> list[Any]:
        items = left(data, env)
        if not items:
            return []
        if not values:
            return [False]
        if len(items) > 1:
            raise Bail
        item = items[0]
        if type(item) is Moment:
            raise Bail
        return [any(value == item for value in values)]
    return member_of


_EMPTY: Any = object()  # an empty operand of and/or


def _operand(values: list[Any]) -> Any:
    # fhirpathpy's Boolean parameter: empty, or exactly one True/False; anything else raises.
    if not values:
        return _EMPTY
    if len(values) == 1 and (values[0] is True or values[0] is False):
        return values[0]
    raise Bail


def _logic_fn(op: str, left: Fn, right: Fn) -> Fn:
    if op == "and":
        def conjunction(data: list[Any], env: Env) -> list[Any]:
            # Both sides always run: fhirpathpy does not short-circuit, so errors surface.
            a, b = _operand(left(data, env)), _operand(right(data, env))
            if a is False or b is False:
                return [False]
            if a is _EMPTY or b is _EMPTY:
                return []
            return [True]
        return conjunction

    def disjunction(data: list[Any], env: Env) -> list[Any]:
        a, b = _operand(left(data, env)), _operand(right(data, env))
        if a is True or b is True:
            return [True]
        if a is _EMPTY or b is _EMPTY:
            return []
        return [False]
    return disjunction


def _func_fn(name: str, source: Fn) -> Fn:
    if name == "exists":
        return lambda data, env: [len(source(data, env)) > 0]
    if name == "empty":
        return lambda data, env: [len(source(data, env)) == 0]
    if name == "count":
        return lambda data, env: [len(source(data, env))]

    def negation(data: list[Any], env: Env) -> list[Any]:
        values = source(data, env)
        if len(values) != 1:
            return []
        value = values[0]
        # fhirpathpy: a single non-boolean counts as true, so its not() is false.
        return [not value] if type(value) is bool else [False]
    return negation


def _filter_fn(exists: bool, source: Fn, criteria: Fn) -> Fn:
    def matching(data: list[Any], env: Env) -> list[Any]:
        # Every item is evaluated (no early exit), as fhirpathpy's where() does.
        kept = []
        for item in source(data, env):
            result = criteria([item], env)
            if result and result[0]:
                kept.append(item)
        return [len(kept) > 0] if exists else kept
    return matching


def _clock_fn(today: bool) -> Fn:
    def clock(_data: list[Any], env: Env) -> list[Any]:
        moment = _clock(env.now)[2 if today else 1]
        if moment.kind == 0:
            raise Bail  # a clock without a time zone: fhirpathpy's local-time rules
        return [moment]
    return clock


def _build(node: Node, raw: bool) -> Fn:
    """A closure for the node; `raw` says whether its input items are the resource dicts."""
    if isinstance(node, Input):
        return lambda data, _env: data
    if isinstance(node, Var):
        return _root(node.name)
    if isinstance(node, Const):
        values = list(node.values)
        return lambda _data, _env: list(values)
    if isinstance(node, Member):
        source_raw = _raw_output(node.source, raw)
        return _member(_build(node.source, raw), node.key, source_raw)
    if isinstance(node, Clock):
        return _clock_fn(node.today)
    if isinstance(node, Compare):
        return _compare_fn(node.op, _build(node.left, raw), _build(node.right, raw))
    if isinstance(node, Equal):
        return _equal_fn(node.negate, _build(node.left, raw), _build(node.right, raw))
    if isinstance(node, In):
        return _in_fn(_build(node.left, raw), node.values)
    if isinstance(node, Logic):
        return _logic_fn(node.op, _build(node.left, raw), _build(node.right, raw))
    if isinstance(node, Func):
        return _func_fn(node.name, _build(node.source, raw))
    if isinstance(node, Filter):
        items_raw = _raw_output(node.source, raw)
        return _filter_fn(node.exists, _build(node.source, raw),
                          _build(node.criteria, items_raw))
    raise Unsupported(type(node).__name__)  # pragma: no cover - every Node is handled above


def _raw_output(node: Node, raw: bool) -> bool:
    """Whether the node yields the resource dicts themselves (fhirpathpy filters those by
    resourceType on a capitalised step; other items are wrapped and never filtered)."""
    if isinstance(node, Input):
        return raw
    if isinstance(node, Var):
        return True
    if isinstance(node, Filter) and not node.exists:
        return _raw_output(node.source, raw)
    return False


def _uses(node: Node, name: str) -> bool:
    if isinstance(node, Var):
        return node.name == name
    return any(isinstance(child, Node) and _uses(child, name)
               for child in vars(node).values())


class FastProgram:
    """A compiled expression: `run` returns what fhirpathpy would, or raises Bail."""

    __slots__ = ("_fn", "_reads_previous", "_types", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        self._fn = _build(node, True)
        self._reads_previous = _uses(node, "previous")
        self._types: dict[tuple[Any, Any], bool] = {}

    def _supports(self, key: tuple[Any, Any]) -> bool:
        known = self._types.get(key)
        if known is None:
            shape: Shape = (key[0], True)
            roots = {"current": shape, "resource": shape, "context": shape,
                     "previous": (key[1], True)}
            try:
                _check(self.node, shape, roots)
                known = True
            except Unsupported:
                known = False
            self._types[key] = known
        return known

    def run(self, resource: dict[str, Any], previous: dict[str, Any] | None,
            now: datetime) -> list[Any]:
        before = previous or {}
        kind = resource.get("resourceType")
        key = (kind, before.get("resourceType") if self._reads_previous else None)
        if not all(k is None or type(k) is str for k in key) or not self._supports(key):
            raise Bail
        return self._fn([resource], Env(resource, before, now))


def compile_fast(tree: Tree) -> FastProgram:
    """Compile fhirpathpy's parse tree (the `{"children": [expression]}` it returns)."""
    children = _children(tree)
    if len(children) != 1:
        raise Unsupported("empty expression")
    return FastProgram(_Converter().expression(children[0]))


def finish(result: list[Any]) -> list[Any]:
    """fhirpathpy drops items that are only a primitive's extension (`{"extension": [...]}`)
    from a result; the same here, before a result is read as true or false."""
    if any(type(item) is dict for item in result):
        return [item for item in result if not (type(item) is dict and
                                                list(item) == ["extension"])]
    return result


def is_true(result: list[Any]) -> bool:
    """A Condition's reading of a result: non-empty and every item exactly True."""
    if len(result) == 1:
        return result[0] is True
    result = finish(result)
    return bool(result) and all(item is True for item in result)


__all__ = ["Bail", "FastProgram", "Moment", "Unsupported", "compile_fast", "finish", "is_true"]
