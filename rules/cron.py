"""A small cron parser (minute hour day-of-month month day-of-week) for scheduled journeys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@hourly": "0 * * * *"}


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, [])
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if index == 3 else 0)
    if not text.isdigit():
        raise ValueError(f"{_FIELDS[index][0]}: {text!r} is not a number")
    return int(text)


def _field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{name}: bad step {step_text!r}")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = _value(a, index), _value(b, index)
        else:
            first = last = _value(body, index)
            if step:
                last = high
        if not low <= first <= last <= high:
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step or 1))
    if index == 4 and 7 in values:  # both 0 and 7 mean Sunday
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """When a scheduled journey runs, as wall-clock times in one zone (the service's)."""

    source: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, source: str) -> CronSchedule:
        text = _ALIASES.get(source.strip(), source.strip())
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"{source!r}: use five fields (minute hour day month weekday), "
                             "e.g. '0 9 * * *'")
        minutes, hours, days, months, weekdays = (_field(p, i) for i, p in enumerate(parts))
        return cls(source, minutes, hours, days, months, weekdays,
                   any_day=parts[2] == "*", any_weekday=parts[4] == "*")

    def _day_matches(self, moment: datetime) -> bool:
        # Classic cron: when both day fields are restricted, either one matching is enough.
        dom = moment.day in self.days
        dow = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def matches(self, moment: datetime) -> bool:
        return (moment.minute in self.minutes and moment.hour in self.hours
                and moment.month in self.months and self._day_matches(moment))

    def previous(
        self, moment: datetime, horizon: timedelta = timedelta(days=366)
    ) -> datetime | None:
        """The latest matching minute at or before `moment` (in its zone), within the horizon."""
        candidate = moment.replace(second=0, microsecond=0)
        limit = moment - horizon
        while candidate >= limit:
            if not (candidate.month in self.months and self._day_matches(candidate)):
                candidate = candidate.replace(hour=23, minute=59) - timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=59) - timedelta(hours=1)
                continue
            if candidate.minute in self.minutes:
                return candidate
            candidate -= timedelta(minutes=1)
        return None
