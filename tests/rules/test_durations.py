"""Step offsets as hospital IT writes them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules.durations import parse_offset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("immediately", None),
        ("  immediately ", None),
        ("-72h", timedelta(hours=-72)),
        ("+1d", timedelta(days=1)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("-90s", timedelta(seconds=-90)),
        ("- 2 h", timedelta(hours=-2)),
    ],
)
def test_accepted_forms(text: str, expected: timedelta | None) -> None:
    assert parse_offset(text) == expected


@pytest.mark.parametrize("text", ["", "72", "-72x", "h", "1.5h", "-72 hours", "now", "--1d", "1y"])
def test_bad_forms_raise_with_the_accepted_forms_in_the_message(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_offset(text)

    message = str(info.value)
    assert repr(text.strip()) in message
    assert "immediately" in message and "-72h" in message
