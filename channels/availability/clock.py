"""The day as availability reads it: minutes since local midnight, 24:00, and the parts of the
day, whose hours are defined here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import time

DAY = 24 * 60  # minutes
END_OF_DAY = time.max  # as a window's end: up to 24:00 (a window never wraps past midnight)
ALL_DAYS = frozenset(range(7))  # 0 = Monday .. 6 = Sunday
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})

# A clinic's day; the clinic's own hours limit what is offered anyway. "After 5" runs to 24:00,
# "before noon" from 00:00.
PARTS_OF_DAY: Mapping[str, tuple[time, time]] = {
    "morning": (time(8), time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time(20)),
}

Span = tuple[int, int]  # minutes since local midnight, end exclusive: 0 <= start < end <= DAY


def minutes(t: time) -> int:
    return DAY if t == END_OF_DAY else t.hour * 60 + t.minute


def clock_time(value: int) -> time:
    return END_OF_DAY if value == DAY else time(value // 60, value % 60)


PART_SPANS: Mapping[str, Span] = {
    name: (minutes(start), minutes(end)) for name, (start, end) in PARTS_OF_DAY.items()}


def runs(days: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive days as (first, last): {0, 1, 2, 4} → [(0, 2), (4, 4)]."""
    found: list[tuple[int, int]] = []
    for day in sorted(days):
        if found and found[-1][1] == day - 1:
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found
