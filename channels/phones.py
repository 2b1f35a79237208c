"""Phone numbers as E.164 (`+` and 8 to 15 digits): the one spelling Twilio, our opt-out records
and a patient's STOP agree on, whatever way the EHR wrote the number."""

from __future__ import annotations

import re

_FORMATTING = re.compile(r"[\s().\-/]")
# ASCII digits only: `\d` alone also matches full-width and other scripts' digits, which
# Twilio cannot dial and which would not match the same number written in ASCII.
_E164 = re.compile(r"\+[1-9]\d{7,14}", re.ASCII)
COUNTRY_CODE = re.compile(r"[1-9]\d{0,2}", re.ASCII)


def e164(value: str, country_code: str | None = None) -> str | None:
    """`+1 (555) 555-0123`, `00 44 20 7946 0000` or, with a default country code, a national
    `555-555-0123` / `020 7946 0000` as E.164; None when it cannot be a dialable number."""
    number = _FORMATTING.sub("", value.strip().removeprefix("tel:"))
    if number.startswith("00"):
        number = "+" + number[2:]
    if not number.startswith("+") and country_code and COUNTRY_CODE.fullmatch(country_code):
        if country_code == "1" and len(number) == 11 and number.startswith("1"):
            number = number[1:]  # NANP long-distance prefix
        number = f"+{country_code}{number.lstrip('0')}"  # elsewhere a leading 0 is the trunk
    return number if _E164.fullmatch(number) else None
