"""The patient's words as symbols: each phrase of a phrasebook's `availability:` section
recognised (longest first, every language, the patient's own first), and what a time they wrote
means ("5" is 17:00, "8-10 pm" is 20:00-22:00)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from channels.availability.clock import ALL_DAYS, DAY, PART_SPANS, WEEKDAYS, WEEKEND, Span
from channels.inbound import MAX_READ, Phrasebook, phrasebooks

_DAY_KEYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_SETS = {"weekdays": WEEKDAYS, "weekends": WEEKEND, "every_day": ALL_DAYS}
_MARKERS = ("any_time", "after", "before", "between", "and", "to", "except", "negation",
            "one_off", "ignore", "durations")
MERIDIEM = ("am", "pm")
_KEYS = frozenset((*_DAY_KEYS, *_DAY_SETS, *PART_SPANS, *_MARKERS, *MERIDIEM, "noon",
                   "midnight", "hours"))
_TOKEN = re.compile(
    r"(?<![0-9])[0-9]{1,2}(?:[:.h][0-9]{2})?(?![0-9])|[0-9]+|[a-z]+|[-–—]|[,.;:!?¡¿\n]")
_MERIDIEM_DOTS = re.compile(r"\b([ap])\.\s?m\b\.?")  # "a.m." is "am", not the end of a sentence
_CLOCK = re.compile(r"([0-9]{1,2})(?:[:.h]([0-9]{2}))?")
_DASHES = frozenset("-–—")
_STOPS = frozenset(",.;:!?¡¿\n")  # where a sentence or a thought ends


class Clock(NamedTuple):
    hour: int
    minute: int
    meridiem: str | None = None  # "am", "pm", "fixed" (noon, midnight) or None: a bare hour


class Symbol(NamedTuple):
    """One recognised phrase: its kind (a list name of the phrasebook, "clock" or "word")."""

    kind: str
    days: frozenset[int] = frozenset()
    span: Span = (0, 0)
    clock: Clock | None = None
    fallback: Symbol | None = None  # "in the morning" after a time is am; on its own, morning


@dataclass(frozen=True)
class Table:
    phrases: Mapping[str, Symbol]
    meridiem: Mapping[str, Symbol]  # consulted only right after a time
    longest: int  # words in the longest phrase


def _key_symbol(key: str, index: int) -> Symbol:
    if key in _DAY_KEYS:
        return Symbol("day", days=frozenset({_DAY_KEYS.index(key)}))
    if key in _DAY_SETS:
        return Symbol("day", days=_DAY_SETS[key])
    if key in PART_SPANS:
        return Symbol("part", span=PART_SPANS[key])
    if key == "hours":
        return Symbol("clock", clock=Clock(index + 1, 0))
    if key in ("noon", "midnight"):
        return Symbol("clock", clock=Clock(12 if key == "noon" else 0, 0, "fixed"))
    return Symbol(key)


def _book_entries(book: Phrasebook) -> Iterator[tuple[str, str, Symbol]]:
    """(list name, phrase, symbol) for every availability phrase of a book, checked."""
    seen: dict[tuple[bool, str], str] = {}
    for key, phrases in book.availability.items():
        if key not in _KEYS:
            raise ValueError(f"{book.language}.yaml availability: unknown list {key!r}")
        if key == "hours" and len(phrases) != 12:
            raise ValueError(f"{book.language}.yaml availability.hours: one to twelve, in order")
        for index, phrase in enumerate(phrases):
            first = seen.setdefault((key in MERIDIEM, phrase), key)
            if first != key:
                raise ValueError(f"{book.language}.yaml availability: {phrase!r} is in both "
                                 f"{first} and {key}")
            yield key, phrase, _key_symbol(key, index)


def build_table(books: Iterable[Phrasebook]) -> Table:
    """One lookup for every language, the preferred one first (its reading wins a clash)."""
    phrases: dict[str, Symbol] = {}
    meridiem: dict[str, Symbol] = {}
    for book in books:
        for key, phrase, symbol in _book_entries(book):
            (meridiem if key in MERIDIEM else phrases).setdefault(phrase, symbol)
    meridiem = {p: s._replace(fallback=phrases.get(p)) for p, s in meridiem.items()}
    longest = max((len(p.split()) for p in (*phrases, *meridiem)), default=1)
    return Table(phrases, meridiem, longest)


@cache
def table_for(language: str | None) -> Table:
    return build_table(sorted(phrasebooks(), key=lambda book: book.language != language))


def tokens(text: str) -> list[str]:
    """Words, numbers, times ("5:30", "17h30"), dashes and punctuation, from accent-free lower
    case (the form `channels.inbound.normalize` gives the phrases)."""
    text = unicodedata.normalize("NFKD", text[:MAX_READ].casefold())
    text = re.sub(r"['’`]", "", "".join(c for c in text if not unicodedata.combining(c)))
    return _TOKEN.findall(_MERIDIEM_DOTS.sub(r"\1m", text))


def _clock_token(token: str) -> Clock | None:
    match = _CLOCK.fullmatch(token)
    if match is None:
        return None
    hour, minute = int(match[1]), int(match[2] or 0)
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        return None
    return Clock(hour, minute)


def _longest(tokens: list[str], at: int, table: Mapping[str, Symbol],
             longest: int) -> tuple[Symbol, int] | None:
    for size in range(min(longest, len(tokens) - at), 0, -1):
        symbol = table.get(" ".join(tokens[at:at + size]))
        if symbol is not None:
            return symbol, size
    return None


def _symbol_at(tokens: list[str], at: int, table: Table, after_clock: bool) -> tuple[Symbol, int]:
    found = (_longest(tokens, at, table.meridiem, table.longest) if after_clock else None) \
        or _longest(tokens, at, table.phrases, table.longest)
    if found is not None:
        return found
    clock = _clock_token(tokens[at])
    if clock is not None:
        return Symbol("clock", clock=clock), 1
    token = tokens[at]
    return Symbol("to" if token in _DASHES else "stop" if token in _STOPS else "word"), 1


def symbols(tokens: list[str], table: Table) -> list[Symbol]:
    """The phrases of the reply, left to right, longest first; am/pm only right after a time."""
    found: list[Symbol] = []
    at = 0
    while at < len(tokens):
        symbol, size = _symbol_at(tokens, at, table, bool(found) and found[-1].kind == "clock")
        found.append(symbol)
        at += size
    return found


def resolve(clock: Clock, meridiem: str | None) -> int | None:
    """Minutes since midnight; a bare hour in clinic hours (1-7 are pm, 8-12 as written)."""
    hour, minute = clock.hour, clock.minute
    meridiem = clock.meridiem or meridiem
    if meridiem == "fixed":
        return hour * 60 + minute
    if meridiem in MERIDIEM:
        if not 1 <= hour <= 12:
            return None  # "17 pm", "0 am"
        return (hour % 12 + (12 if meridiem == "pm" else 0)) * 60 + minute
    return (hour + 12 if 1 <= hour <= 7 else hour) * 60 + minute


def time_range(start: tuple[Clock, str | None], end: tuple[Clock, str | None]) -> Span | None:
    """ "9-11", "8-10 pm" (20-22), "10-2 pm" (10-14): the first reading that runs forward."""
    hi = resolve(*end)
    if hi is None:
        return None
    hi = hi or DAY  # "until midnight"
    clock, meridiem = start
    readings = [meridiem] if meridiem or clock.meridiem else [end[1], None, "am", "pm"]
    for reading in readings:
        lo = resolve(clock, reading)
        if lo is not None and lo < hi:
            return lo, hi
    return None
