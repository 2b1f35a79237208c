"""A time zone in which it is now around midday: tests on the real clock whose journeys keep
quiet hours (21:00-08:00) must not depend on when the test run happens."""

from __future__ import annotations

from datetime import UTC, datetime


def daytime_zone(now: datetime | None = None) -> str:
    """An IANA `Etc/GMT±N` zone where the local hour is 12 (POSIX signs are
    inverted: Etc/GMT-3 is UTC+3)."""
    offset = 12 - (now or datetime.now(UTC)).hour  # -11 .. 12
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
