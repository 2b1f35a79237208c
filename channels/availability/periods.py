"""Availability as FHIR `Period`s (an Appointment's `requestedPeriod`, R4's own way to say when
a patient can come), and back: a test of slots against the Periods an EHR holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from channels.availability.clock import END_OF_DAY
from channels.availability.model import Availability

MAX_PERIODS = 1000  # the most Periods written or read at once


def _instant_at(day: date, t: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time; one skipped by DST moves on by the gap (02:30 on
    the spring-forward day is 03:30)."""
    if t == END_OF_DAY:
        day, t = day + timedelta(days=1), time(0)
    return datetime.combine(day, t, tzinfo=zone).astimezone(UTC)


def _fhir_instant(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat(timespec="seconds")


def requested_periods(availability: Availability, zone: ZoneInfo, start: datetime, end: datetime,
                      max_periods: int = 60) -> list[dict[str, str]]:
    """The windows as FHIR Periods between `start` and `end` (clipped to them, to the second),
    earliest first, at most `max_periods`: an Appointment's `requestedPeriod`."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end carry their offset")
    if not 1 <= max_periods <= MAX_PERIODS:
        raise ValueError(f"max_periods: 1 to {MAX_PERIODS}")
    first = start.astimezone(UTC) + timedelta(microseconds=(-start.microsecond) % 1_000_000)
    last = end.astimezone(UTC).replace(microsecond=0)
    periods: list[dict[str, str]] = []
    day, final = first.astimezone(zone).date(), last.astimezone(zone).date()
    while day <= final and len(periods) < max_periods:
        for lo, hi in _periods_on(availability, day, zone):
            lo, hi = max(lo, first), min(hi, last)
            if lo < hi and len(periods) < max_periods:
                periods.append({"start": _fhir_instant(lo, zone), "end": _fhir_instant(hi, zone)})
        day += timedelta(days=1)
    return periods


def _periods_on(availability: Availability, day: date,
                zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    return sorted((_instant_at(day, w.start, zone), _instant_at(day, w.end, zone))
                  for w in availability.windows if day.weekday() in w.weekdays)


_INSTANT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})")


def _read_instant(value: object) -> datetime | None:
    """A FHIR instant with its offset, or None (a date alone has no zone: not ours to guess)."""
    match = _INSTANT.fullmatch(value) if isinstance(value, str) and len(value) <= 40 else None
    if match is None:
        return None
    *fields, fraction, offset = match.groups()
    try:
        zone = UTC if offset == "Z" else timezone(
            (-1 if offset[0] == "-" else 1) * timedelta(hours=int(offset[1:3]),
                                                        minutes=int(offset[4:])))
        year, month, day, hour, minute, second = map(int, fields)
        moment = datetime(year, month, day, hour, minute, second,
                          int((fraction or "0").ljust(6, "0")[:6]), tzinfo=zone)
        return moment.astimezone(UTC)  # year 1 at +14:00 is no instant we can hold
    except (ValueError, OverflowError):
        return None


def _read_period(period: object) -> tuple[datetime | None, datetime | None] | None:
    """(start, end) of a Period, either end open; None when it is not a usable Period."""
    if not isinstance(period, dict):
        return None
    raw = [period.get("start"), period.get("end")]
    lo, hi = (_read_instant(v) for v in raw)
    if (lo is None and raw[0] is not None) or (hi is None and raw[1] is not None) or (
            lo is None and hi is None) or (lo is not None and hi is not None and hi <= lo):
        return None
    return lo, hi


def from_requested_periods(periods: object) -> Callable[[datetime, datetime], bool]:
    """A test for slots: True when the slot lies inside one of these FHIR Periods (an open end
    is open). Malformed periods are left out; none usable admits nothing. Never raises."""
    items = periods[:MAX_PERIODS] if isinstance(periods, (list, tuple)) else []
    spans = [span for span in map(_read_period, items) if span is not None]

    def admits(start: datetime, end: datetime) -> bool:
        if not isinstance(start, datetime) or not isinstance(end, datetime) or (
                start.tzinfo is None or end.tzinfo is None):
            return False
        try:
            start, end = start.astimezone(UTC), end.astimezone(UTC)
        except OverflowError:
            return False
        return start < end and any((lo is None or lo <= start) and (hi is None or end <= hi)
                                   for lo, hi in spans)

    return admits
