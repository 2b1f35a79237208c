"""Step timing: `immediately`, `-72h`, `+1d`, `30m`, and `-1d@17:00` (a local clock time)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_OFFSET = re.compile(r"^(?P<sign>[+-])?\s*(?P<num>\d+)\s*(?P<unit>[smhdw])$")
_DAY_AT = re.compile(r"^(?:(?P<sign>[+-])?(?P<num>\d+)d)?@(?P<hh>[01]\d|2[0-3]):(?P<mm>[0-5]\d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

IMMEDIATELY = "immediately"
ACCEPTED = (
    "use 'immediately', a signed number with a unit (s, m, h, d, w), e.g. '-72h', '+1d', '30m', "
    "or days from the anchor's local date at a local clock time, e.g. '-1d@17:00', '@07:30'"
)
# For editors (the JSON Schema): the same forms as the parser accepts.
AT_PATTERN = (
    r"^\s*(immediately|[+-]?\s*\d+\s*[smhdw]|([+-]?\d+d)?@([01]\d|2[0-3]):[0-5]\d)\s*$"
)


@dataclass(frozen=True, slots=True)
class Offset:
    """When a step is due, relative to its journey's anchor. `delta` is an exact duration;
    `clock` (with `days`) is a wall-clock time in the patient's zone on a day near the anchor;
    neither means immediately (at planning time)."""

    delta: timedelta | None = None
    days: int = 0
    clock: time | None = None

    @property
    def immediate(self) -> bool:
        return self.delta is None and self.clock is None

    @property
    def before_anchor(self) -> bool:
        """Whether the step is meant to happen before the anchor (a reminder), so being pushed
        past the anchor makes it pointless."""
        if self.delta is not None:
            return self.delta < timedelta(0)
        return self.clock is not None and self.days < 0

    def due(self, anchor: datetime, now: datetime, tz: ZoneInfo) -> datetime:
        if self.delta is not None:
            return anchor + self.delta
        if self.clock is None:
            return now
        day = anchor.astimezone(tz).date() + timedelta(days=self.days)
        return datetime.combine(day, self.clock, tzinfo=tz)


@lru_cache(maxsize=1024)  # planning parses every step of every booking; Offset is frozen
def parse_at(text: str) -> Offset:
    """Parse a step's `at`; raise ValueError naming the accepted forms."""
    text = text.strip()
    if text == IMMEDIATELY:
        return Offset()
    day_at = _DAY_AT.match(text)
    if day_at is not None:
        days = int(day_at["num"] or 0) * (-1 if day_at["sign"] == "-" else 1)
        return Offset(days=days, clock=time(int(day_at["hh"]), int(day_at["mm"])))
    match = _OFFSET.match(text)
    if match is None:
        raise ValueError(f"bad offset {text!r}: {ACCEPTED}")
    value = int(match["num"]) * (-1 if match["sign"] == "-" else 1)
    return Offset(delta=timedelta(**{_UNITS[match["unit"]]: value}))


def parse_offset(text: str) -> timedelta | None:
    """The exact duration of a relative offset, or None for `immediately`."""
    offset = parse_at(text)
    if offset.clock is not None:
        raise ValueError(f"{text.strip()!r} is a clock time, not a duration")
    return offset.delta
