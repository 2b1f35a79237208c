"""Reading when a patient can come from their own words, English and Spanish.

Deterministic and cautious, like `channels.inbound`: days and times are read into clauses
("weekday mornings or Saturday afternoons" is two). A reply that says when the patient can *not*
come (a "not" in the same sentence as a day or time: "not mornings", "mornings don't work", "I
work weekdays") or names one day ("tomorrow") gives None, so staff read it: offering what the
patient ruled out is worse than asking again. "No, mornings please" is mornings."""

from __future__ import annotations

from collections.abc import Callable

from channels.availability.clauses import Clause, canonical
from channels.availability.clock import DAY, clock_time
from channels.availability.model import MAX_WINDOWS, Availability, Window
from channels.availability.phrases import (
    MERIDIEM,
    Clock,
    Symbol,
    build_table,
    resolve,
    symbols,
    table_for,
    time_range,
    tokens,
)
from channels.inbound import Phrasebook

RAW_LIMIT = 64  # distinct windows read before merging; past this the reply is not one we hold


class _Reader:
    """Walks the symbols into clauses. A new clause starts when days or times come back after
    the other was said: "weekday mornings | Saturday afternoons"."""

    def __init__(self, symbols: list[Symbol]) -> None:
        self.symbols, self.at = symbols, 0
        self.clauses: list[Clause] = []
        self.refused = False
        # within one sentence (up to the next punctuation): a "not", and a day or time said
        self.negated = self.said = False
        self.handlers: dict[str, Callable[[Symbol], None]] = {
            "negation": self.negation, "one_off": self.refuse, "stop": self.stop, "day": self.day,
            "part": self.part, "any_time": self.whole, "except": self.excepting,
            "after": self.after, "between": self.after, "before": self.before,
            "clock": self.clock, "am": self.orphan, "pm": self.orphan}

    def read(self) -> list[Clause] | None:
        while self.at < len(self.symbols) and not self.refused:
            symbol = self.symbols[self.at]
            self.at += 1
            handler = self.handlers.get(symbol.kind)
            if handler is not None:
                handler(symbol)
        return None if self.refused else self.clauses

    def peek(self, kinds: tuple[str, ...], offset: int = 0) -> Symbol | None:
        """The symbol `offset` ahead of the cursor when it is of one of these kinds."""
        at = self.at + offset
        symbol = self.symbols[at] if at < len(self.symbols) else None
        return symbol if symbol is not None and symbol.kind in kinds else None

    def clause(self, kind: str) -> Clause:
        self.said = True
        self.refused = self.refused or self.negated
        current = self.clauses[-1] if self.clauses else None
        if current is None or (kind in current.kinds and current.last not in (kind, "except")):
            current = Clause()
            self.clauses.append(current)
        return current

    def time(self) -> tuple[Clock, str | None] | None:
        """The time at the cursor with its am/pm, consumed; None when there is none or it is a
        quantity ("2 weeks")."""
        symbol = self.peek(("clock",))
        if symbol is None or symbol.clock is None:
            return None
        self.at += 1
        meridiem = self.peek(MERIDIEM)
        self.at += meridiem is not None
        if self.peek(("durations",)) is not None:
            self.at += 1
            return None
        return symbol.clock, meridiem.kind if meridiem else None

    def refuse(self, symbol: Symbol) -> None:
        self.refused = True

    def negation(self, symbol: Symbol) -> None:
        self.negated = True
        self.refused = self.said

    def stop(self, symbol: Symbol) -> None:
        self.negated = self.said = False

    def day(self, symbol: Symbol) -> None:
        days = set(symbol.days)
        last = self.peek(("day",), 1)
        if self.peek(("to",)) and last and len(symbol.days) == len(last.days) == 1:
            (a,), (b,) = symbol.days, last.days  # "Monday to Friday", "lunes a viernes"
            days = {(a + i) % 7 for i in range((b - a) % 7 + 1)}
            self.at += 2
        self.clause("days").add_days(frozenset(days))

    def part(self, symbol: Symbol) -> None:
        self.clause("times").add_span(symbol.span)

    def whole(self, symbol: Symbol) -> None:
        self.clause("times").add_span(None)

    def excepting(self, symbol: Symbol) -> None:
        if not self.clauses:
            self.clauses.append(Clause())
        self.clauses[-1].excepting, self.clauses[-1].last = True, "except"

    def orphan(self, symbol: Symbol) -> None:
        """An am/pm phrase after a time that said nothing: "in the morning" still means
        mornings."""
        if symbol.fallback is not None and symbol.fallback.kind == "part":
            self.part(symbol.fallback)

    def clock(self, symbol: Symbol) -> None:
        """A time alone says nothing ("5", an option number); "9-11", "9 to 11" is a range."""
        position = self.at = self.at - 1
        start = self.time()
        if start is None:
            return
        if self.peek(("to",)):
            self.at += 1
            self.range(start)
        else:
            self.at = position + 1  # its am/pm is read on its own: "at 10 in the morning"

    def after(self, symbol: Symbol) -> None:
        start = self.time()
        if start is None:
            return
        if self.peek(("to", "and") if symbol.kind == "between" else ("to",)):
            self.at += 1
            self.range(start)
        elif symbol.kind == "after" and (lo := resolve(*start)) is not None and lo < DAY:
            self.clause("times").add_span((lo, DAY), bound=True)

    def before(self, symbol: Symbol) -> None:
        end = self.time()
        hi = resolve(*end) if end is not None else None
        if hi is not None:
            self.clause("times").add_span((0, hi or DAY), bound=True)

    def range(self, start: tuple[Clock, str | None]) -> None:
        end = self.time()
        span = time_range(start, end) if end is not None else None
        if span is not None:
            self.clause("times").add_span(span)


def parse(text: str, language: str | None = None, *,
          books: tuple[Phrasebook, ...] | None = None) -> Availability | None:
    """When the patient says they can come, or None when the reply says nothing we can hold
    (no day or part of the day, a "not", one day such as "tomorrow", more than `MAX_WINDOWS`
    windows). `language` is read first, the other shipped languages after it (patients mix
    them). Reads at most `MAX_READ` characters."""
    if not isinstance(text, str):
        return None
    table = table_for(language) if books is None else build_table(books)
    clauses = _Reader(symbols(tokens(text), table)).read()
    raw = {window for clause in clauses or () for window in clause.windows()}
    if not raw or len(raw) > RAW_LIMIT:
        return None
    windows = canonical(list(raw))
    if len(windows) > MAX_WINDOWS:
        return None
    return Availability(tuple(Window(days, clock_time(start), clock_time(end))
                              for days, (start, end) in windows))
