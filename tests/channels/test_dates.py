"""Dates as a patient reads them."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from channels.dates import format_when


def test_english() -> None:
    assert format_when(datetime(2026, 11, 27, 10, 30)) == "Friday 27 November at 10:30"
    assert format_when(datetime(2026, 3, 1, 8, 5), "en") == "Sunday 1 March at 08:05"


def test_spanish() -> None:
    assert format_when(datetime(2026, 11, 27, 10, 30), "es") == (
        "viernes 27 de noviembre a las 10:30"
    )
    assert format_when(datetime(2026, 8, 5, 16, 0), "es") == "miércoles 5 de agosto a las 16:00"


@pytest.mark.parametrize("language", [None, "fr", "EN-gb"])
def test_other_languages_read_as_english(language: str | None) -> None:
    assert format_when(datetime(2026, 11, 27, 10, 30), language) == "Friday 27 November at 10:30"


def test_the_local_wall_clock_is_shown() -> None:
    local = datetime(2026, 11, 27, 15, 30, tzinfo=ZoneInfo("UTC")).astimezone(
        ZoneInfo("America/New_York")
    )

    assert format_when(local) == "Friday 27 November at 10:30"
