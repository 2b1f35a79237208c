"""Clauses: days and times a patient said together ("weekday mornings"), narrowed ("afternoons
after 3"), excepted ("except Fridays"), and merged into as few windows as say the same."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from channels.availability.clock import ALL_DAYS, DAY, Span


@dataclass
class Clause:
    days: set[int] = field(default_factory=set)
    not_days: set[int] = field(default_factory=set)
    spans: list[Span] = field(default_factory=list)  # parts of the day and explicit ranges
    bounds: list[Span] = field(default_factory=list)  # "after 5", "before noon": they narrow
    not_spans: list[Span] = field(default_factory=list)
    whole: bool = False  # "any time": the whole day unless something narrower is said
    kinds: set[str] = field(default_factory=set)  # "days", "times"
    last: str = ""  # the kind taken last, or "except"
    excepting: bool = False

    def add_days(self, days: frozenset[int]) -> None:
        self._turn("days")
        (self.not_days if self.excepting else self.days).update(days)

    def add_span(self, span: Span | None, *, bound: bool = False) -> None:
        """A span of the day; None is the whole day ("any time")."""
        self._turn("times")
        if span is None:
            self.whole = True
        else:
            target = self.not_spans if self.excepting else self.bounds if bound else self.spans
            target.append(span)

    def _turn(self, kind: str) -> None:
        if self.excepting and self.last not in ("except", kind):
            self.excepting = False  # "weekdays except Friday, mornings": the except is over
        self.kinds.add(kind)
        self.last = kind

    def windows(self) -> list[tuple[frozenset[int], Span]]:
        days = frozenset(self.days or ALL_DAYS) - self.not_days
        base = list(self.spans) or ([(0, DAY)] if self.whole or not self.bounds else [])
        spans = merged(without(narrowed(base, self.bounds), self.not_spans))
        return [(days, span) for span in spans] if days else []


def narrowed(spans: list[Span], bounds: list[Span]) -> list[Span]:
    """Each bound narrows what it overlaps ("afternoons after 3", "after 5 and before 8 pm"),
    else stands alone ("mornings or after 5")."""
    for lo, hi in bounds:
        if any(s < hi and lo < e for s, e in spans):
            spans = [(max(s, lo), min(e, hi)) if s < hi and lo < e else (s, e) for s, e in spans]
        else:
            spans = [*spans, (lo, hi)]
    return spans


def without(spans: list[Span], holes: list[Span]) -> list[Span]:
    for lo, hi in holes:
        spans = [piece for s, e in spans for piece in ((s, min(e, lo)), (max(s, hi), e))
                 if piece[0] < piece[1]]
    return spans


def merged(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def canonical(raw: list[tuple[frozenset[int], Span]]) -> list[tuple[frozenset[int], Span]]:
    """Same days: spans merged ("mornings and afternoons" is 8-17); same span: days merged;
    until nothing changes. Earliest day first."""
    items = sorted(set(raw), key=_order)
    while True:
        by_days: dict[frozenset[int], list[Span]] = {}
        for days, span in items:
            by_days.setdefault(days, []).append(span)
        by_span: dict[Span, frozenset[int]] = {}
        for days, spans in by_days.items():
            for span in merged(spans):
                by_span[span] = by_span.get(span, frozenset()) | days
        fewer = sorted(((days, span) for span, days in by_span.items()), key=_order)
        if fewer == items:
            return items
        items = fewer


def _order(item: tuple[frozenset[int], Span]) -> tuple[int, Span, list[int]]:
    return min(item[0]), item[1], sorted(item[0])
