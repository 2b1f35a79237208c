"""When a patient can come: recurring windows on their own clock, the test of a slot against
them, and the short code they are stored as ("mo-fr@08:00-12:00;sa@09:00-13:00")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from channels.availability import wording
from channels.availability.clock import END_OF_DAY, Span, minutes, runs

MAX_WINDOWS = 8  # more than this in one reply is too detailed to hold faithfully: staff read it
MAX_CODES = 256  # a stored code longer than this is not ours


@dataclass(frozen=True)
class Window:
    """One recurring window in the patient's local time: these weekdays (0 = Monday), from
    `start` up to `end` (exclusive; `END_OF_DAY` is 24:00), to the minute."""

    weekdays: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        days = self.weekdays
        if not isinstance(days, frozenset) or not days or not all(
                type(d) is int and 0 <= d <= 6 for d in days):
            raise ValueError("weekdays: a non-empty set of 0 (Monday) .. 6 (Sunday)")
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time) or value.tzinfo is not None or (
                    value != END_OF_DAY and (value.second or value.microsecond)):
                raise ValueError(f"{name}: a local time to the minute")
        if self.start == END_OF_DAY or minutes(self.start) >= minutes(self.end):
            raise ValueError("a window starts before it ends, within one day")

    @property
    def span(self) -> Span:
        return minutes(self.start), minutes(self.end)

    def contains(self, local_start: datetime, local_end: datetime) -> bool:
        """The slot (both ends in the patient's zone) lies inside this window on its day.
        Wall-clock times: "after 5 pm" means 17:00 on the patient's clock, DST or not."""
        if local_start.weekday() not in self.weekdays or local_start.time() < self.start:
            return False
        if local_end.date() == local_start.date():
            return local_end.time() <= self.end
        return (self.end == END_OF_DAY and local_end.time() == time(0)
                and local_end.date() == local_start.date() + timedelta(days=1))


@dataclass(frozen=True)
class Availability:
    """When the patient can come: any one of these windows (1 to `MAX_WINDOWS`)."""

    windows: tuple[Window, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.windows, tuple) or not 1 <= len(self.windows) <= MAX_WINDOWS:
            raise ValueError(f"availability: 1 to {MAX_WINDOWS} windows")
        if not all(isinstance(w, Window) for w in self.windows):
            raise ValueError("availability: windows only")

    def admits(self, start: datetime, end: datetime, zone: ZoneInfo) -> bool:
        """The whole slot, read on the patient's clock, lies inside one window."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("a slot's start and end carry their offset")
        if end <= start:
            return False
        local_start, local_end = start.astimezone(zone), end.astimezone(zone)
        return any(w.contains(local_start, local_end) for w in self.windows)

    def describe(self, language: str | None = "en") -> str:
        """A few words for a confirmation: "weekday mornings", "lunes a viernes por la mañana"."""
        return wording.describe([(w.weekdays, w.span) for w in self.windows], language)

    def to_codes(self) -> str:
        """"mo-fr@08:00-12:00;sa@09:00-13:00": short, for storage; `from_codes` reads it back."""
        return ";".join(f"{_days_code(w.weekdays)}@{_clock_code(w.start)}-{_clock_code(w.end)}"
                        for w in self.windows)

    @classmethod
    def from_codes(cls, codes: str) -> Availability:
        """Read a stored code, checked against its grammar; ValueError when it is not one."""
        if not isinstance(codes, str) or not 0 < len(codes) <= MAX_CODES:
            raise ValueError(f"availability code: 1 to {MAX_CODES} characters")
        parts = codes.split(";")
        if len(parts) > MAX_WINDOWS:
            raise ValueError(f"availability code: at most {MAX_WINDOWS} windows")
        return cls(tuple(_window_from_code(part) for part in parts))


# Storage codes: days@HH:MM-HH:MM, windows joined by ";", days as mo..su, runs and lists.

_DAY_CODES = ("mo", "tu", "we", "th", "fr", "sa", "su")
_WINDOW_CODE = re.compile(
    r"(?P<days>[a-z]{2}(?:-[a-z]{2})?(?:,[a-z]{2}(?:-[a-z]{2})?)*)"
    r"@(?P<start>[0-9]{2}:[0-9]{2})-(?P<end>[0-9]{2}:[0-9]{2})")


def _days_code(days: frozenset[int]) -> str:
    return ",".join(_DAY_CODES[a] if a == b else f"{_DAY_CODES[a]}-{_DAY_CODES[b]}"
                    for a, b in runs(days))


def _clock_code(t: time) -> str:
    return "24:00" if t == END_OF_DAY else t.strftime("%H:%M")


def _days_from_code(text: str) -> frozenset[int]:
    days: list[int] = []
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in _DAY_CODES or (last and last not in _DAY_CODES):
            raise ValueError(f"availability code: unknown day in {item!r}")
        a, b = _DAY_CODES.index(first), _DAY_CODES.index(last or first)
        if b < a or (last and a == b):
            raise ValueError(f"availability code: {item!r} is no range")
        days.extend(range(a, b + 1))
    if len(set(days)) != len(days):
        raise ValueError("availability code: a day named twice")
    return frozenset(days)


def _time_from_code(text: str, *, end: bool) -> time:
    hour, minute = int(text[:2]), int(text[3:])
    if end and (hour, minute) == (24, 0):
        return END_OF_DAY
    if hour > 23 or minute > 59:
        raise ValueError(f"availability code: {text!r} is no time of day")
    return time(hour, minute)


def _window_from_code(text: str) -> Window:
    match = _WINDOW_CODE.fullmatch(text)
    if match is None:
        raise ValueError("availability code: expected days@HH:MM-HH:MM")
    return Window(_days_from_code(match["days"]), _time_from_code(match["start"], end=False),
                  _time_from_code(match["end"], end=True))
