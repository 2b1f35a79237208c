"""Dates as a patient reads them, in English or Spanish (no locale database needed)."""

from __future__ import annotations

from datetime import datetime

_DAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
}
_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre"],
}


def format_when(local: datetime, language: str | None = None) -> str:
    """'Friday 27 November at 10:30' / 'viernes 27 de noviembre a las 10:30'."""
    lang = language if language in _DAYS else "en"
    day, month = _DAYS[lang][local.weekday()], _MONTHS[lang][local.month - 1]
    clock = local.strftime("%H:%M")
    if lang == "es":
        return f"{day} {local.day} de {month} a las {clock}"
    return f"{day} {local.day} {month} at {clock}"


def format_short(local: datetime, language: str | None = None) -> str:
    """'Tue 9 Dec 09:00' / 'mar 9 dic 09:00': one of several options in a text message."""
    lang = language if language in _DAYS else "en"
    day, month = _DAYS[lang][local.weekday()][:3], _MONTHS[lang][local.month - 1][:3]
    return f"{day} {local.day} {month} {local.strftime('%H:%M')}"
