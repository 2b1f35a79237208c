"""Step offsets: `immediately`, `-72h`, `+1d`, `30m` relative to a journey's anchor."""

from __future__ import annotations

import re
from datetime import timedelta

_OFFSET = re.compile(r"^(?P<sign>[+-])?\s*(?P<num>\d+)\s*(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

IMMEDIATELY = "immediately"


def parse_offset(text: str) -> timedelta | None:
    """Return the offset, or None for `immediately`; raise ValueError with the accepted forms."""
    text = text.strip()
    if text == IMMEDIATELY:
        return None
    match = _OFFSET.match(text)
    if match is None:
        raise ValueError(
            f"bad offset {text!r}: use 'immediately' or a signed number with a unit "
            "(s, m, h, d, w), e.g. '-72h', '+1d', '30m'"
        )
    value = int(match["num"]) * (-1 if match["sign"] == "-" else 1)
    return timedelta(**{_UNITS[match["unit"]]: value})
