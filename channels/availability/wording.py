"""Availability said back to the patient in a few words, for a confirmation: "weekday mornings",
"after 5 pm", "lunes a viernes por la mañana" (English and Spanish; English otherwise)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from channels.availability.clock import ALL_DAYS, DAY, PART_SPANS, WEEKDAYS, WEEKEND, Span, runs


@dataclass(frozen=True)
class _Words:
    days: tuple[str, ...]  # plural: "Mondays", "lunes"
    day: tuple[str, ...]  # one: "Monday", "sábado" (in "Monday to Thursday")
    to: str
    weekdays: str
    weekends: str
    any_time: str
    parts: Mapping[str, str]  # on every day: "mornings", "por las mañanas"
    day_parts: Mapping[str, str]  # after days: "(weekday) mornings", "(lunes) por la mañana"
    after: str
    before: str
    any_day: str
    except_: str
    and_: str
    or_: str
    days_as_adjective: bool  # English: "weekday mornings", "Monday and Friday mornings"


_EN_PARTS = {"morning": "mornings", "afternoon": "afternoons", "evening": "evenings"}
_WORDS = {
    "en": _Words(("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
                  "Sundays"),
                 ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                 "to", "weekdays", "weekends", "any time", _EN_PARTS, _EN_PARTS,
                 "after", "before", "any day", "except", "and", "or", days_as_adjective=True),
    "es": _Words(("lunes", "martes", "miércoles", "jueves", "viernes", "sábados", "domingos"),
                 ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"), "a",
                 "lunes a viernes", "fines de semana", "a cualquier hora",
                 {"morning": "por las mañanas", "afternoon": "por las tardes",
                  "evening": "por las noches"},
                 {"morning": "por la mañana", "afternoon": "por la tarde",
                  "evening": "por la noche"},
                 "después de", "antes de", "cualquier día", "excepto los", "y", "o",
                 days_as_adjective=False),
}


def _listed(items: list[str], conjunction: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _day_words(days: frozenset[int], words: _Words) -> str | None:
    if days == ALL_DAYS:
        return None
    if days == WEEKDAYS:
        return words.weekdays
    if days == WEEKEND:
        return words.weekends
    names: list[str] = []
    for a, b in runs(days):
        if b - a >= 2:  # "Monday to Thursday"
            names.append(f"{words.day[a]} {words.to} {words.day[b]}")
        else:
            names.extend(words.days[d] for d in range(a, b + 1))
    return _listed(names, words.and_)


def _clock_words(minutes: int, lang: str) -> str:
    """ "5 pm", "5:30 pm", "noon" / "las 17:00", "la 1:00"."""
    hour, minute = divmod(minutes % DAY, 60)
    if lang == "es":
        return f"{'la' if hour == 1 else 'las'} {hour}:{minute:02d}"
    if (hour, minute) in ((0, 0), (12, 0)):
        return "midnight" if hour == 0 else "noon"
    clock = f"{(hour - 1) % 12 + 1}" + (f":{minute:02d}" if minute else "")
    return f"{clock} {'am' if hour < 12 else 'pm'}"


def _hours_words(span: Span, lang: str, words: _Words) -> str | None:
    start, end = span
    if span == (0, DAY):
        return None
    if end == DAY:
        return f"{words.after} {_clock_words(start, lang)}"
    if start == 0:
        return f"{words.before} {_clock_words(end, lang)}"
    if lang == "es":
        return f"de {_clock_words(start, lang)} a {_clock_words(end, lang)}"
    return f"{_clock_words(start, lang)} to {_clock_words(end, lang)}"


def _window_words(days: frozenset[int], span: Span, lang: str) -> str:
    words = _WORDS[lang]
    missing = ALL_DAYS - days
    if len(missing) in (1, 2) and missing != WEEKEND:
        # "mornings except Fridays" is shorter than six days named
        every = _window_words(ALL_DAYS, span, lang)
        every = words.any_day if every == words.any_time else every
        named = _listed([words.days[d] for d in sorted(missing)], words.and_)
        return f"{every} {words.except_} {named}"
    named_days = _day_words(days, words)
    part = next((name for name, part_span in PART_SPANS.items() if span == part_span), None)
    if part is not None and named_days is None:
        return words.parts[part]
    if part is not None and named_days is not None:
        # "weekdays" → "weekday", "Mondays and Fridays" → "Monday and Friday" before "mornings"
        adjective = re.sub(r"s\b", "", named_days) if words.days_as_adjective else named_days
        return f"{adjective} {words.day_parts[part]}"
    hours = _hours_words(span, lang, words)
    return " ".join(w for w in (named_days, hours) if w) or words.any_time


def describe(windows: Iterable[tuple[frozenset[int], Span]], language: str | None) -> str:
    """The windows (weekdays, span) as a short phrase, joined by "or"."""
    lang = language if language is not None and language in _WORDS else "en"
    return _listed([_window_words(days, span, lang) for days, span in windows], _WORDS[lang].or_)
