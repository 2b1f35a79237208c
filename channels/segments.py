"""How many SMS segments a text is billed as: GSM-7 or UCS-2, single or concatenated."""

from __future__ import annotations

_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQ"
            "RSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€")
_GSM7_EXTENDED = set("^{}\\[~]|€")


def sms_segments(text: str) -> int:
    """Segments a carrier bills: GSM-7 160 (153 when split), else UCS-2 70 (67 when split)."""
    if set(text) <= _GSM7:
        length = len(text) + sum(1 for ch in text if ch in _GSM7_EXTENDED)
        single, multi = 160, 153
    else:
        length, single, multi = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else -(-length // multi)
