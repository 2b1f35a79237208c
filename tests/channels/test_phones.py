"""Phone numbers however the EHR wrote them, as the one E.164 spelling Twilio and our opt-out
records agree on; None for what cannot be dialled."""

from __future__ import annotations

import pytest

from channels.phones import e164

US = "+15555550123"
UK = "+442079460000"


@pytest.mark.parametrize(("value", "country_code", "expected"), [
    # Written with a country code: the default one is not needed, nor used.
    ("+15555550123", None, US),
    ("+1 (555) 555-0123", None, US),
    ("+1.555.555.0123", None, US),
    ("+1/555/555-0123", None, US),
    ("  +1 555 555 0123\n", None, US),
    ("00 44 20 7946 0000", None, UK),
    ("0044-20-7946-0000", "1", UK),
    ("+44 20 7946 0000", "1", UK),
    ("tel:+1-555-555-0123", None, US),
    ("tel:+15555550123", "44", US),
    # National numbers: dialled with the default country code, if one is set.
    ("(555) 555-0123", "1", US),
    ("555-555-0123", "1", US),
    ("5555550123", "1", US),
    ("1-555-555-0123", "1", US),  # the NANP long-distance 1 is not doubled
    ("1 (555) 555-0123", "1", US),
    ("tel:555-555-0123", "1", US),
    ("020 7946 0000", "44", UK),  # the trunk 0 goes
    ("20 7946 0000", "44", UK),
    ("(555) 555-0123", None, None),
    ("555-555-0123", "", None),
    ("5555550123", "0", None),  # not a country code: ignored
    ("5555550123", "1234", None),
    ("5555550123", "+1", None),
    # Junk.
    ("", None, None),
    ("", "1", None),
    ("   ", "1", None),
    ("abc", None, None),
    ("abc", "1", None),
    ("tel:", "1", None),
    ("+", None, None),
    ("00", None, None),
    ("+0123456789", None, None),  # no country code starts with 0
    ("+0015555550123", None, None),
    ("+" + "1" * 20, None, None),  # 20 digits: longer than E.164 allows
    ("1" * 20, "1", None),
    ("+1555555012345678", None, None),  # 16 digits
    ("+1234567", None, None),  # 7 digits: too short
    ("911", "1", None),
    ("+1 555 555 0123 ext. 4", None, None),
    ("+1 555 555 0123;ext=4", None, None),
    ("+1 555 CALL NOW", None, None),
    ("pat@example.org", "1", None),
    ("+1５５５５５５０１２３", None, None),  # full-width digits: Twilio cannot dial these
    ("+1٥٥٥٥٥٥٠١٢٣", None, None),  # Arabic-Indic digits
])
def test_e164(value: str, country_code: str | None, expected: str | None) -> None:
    assert e164(value, country_code) == expected


def test_e164_is_idempotent() -> None:
    for value, code in [("(555) 555-0123", "1"), ("00 44 20 7946 0000", None)]:
        once = e164(value, code)
        assert once is not None and e164(once) == once and e164(once, "49") == once
