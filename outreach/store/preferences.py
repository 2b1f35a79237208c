"""A patient's own outreach preferences (language, channel, quiet hours, categories opted out
of): read at send time, changed from the preference page."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from outreach.store.db import flushed_connection
from outreach.store.models import PatientPreference
from rules.schema import CONSENT_CATEGORIES

LANGUAGES = ("en", "es")
CHANNELS = ("sms", "email")
CLOCK = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


@dataclass(frozen=True, slots=True)
class Preferences:
    """None means "as the EHR and the journey say"."""

    language: str | None = None
    channel: str | None = None
    quiet_from: str | None = None
    quiet_to: str | None = None
    categories_off: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.language not in (None, *LANGUAGES):
            raise ValueError(f"language {self.language!r}: one of {', '.join(LANGUAGES)}")
        if self.channel not in (None, *CHANNELS):
            raise ValueError(f"channel {self.channel!r}: one of {', '.join(CHANNELS)}")
        unknown = self.categories_off - set(CONSENT_CATEGORIES)
        if unknown:
            raise ValueError(f"categories {sorted(unknown)}: among {', '.join(CONSENT_CATEGORIES)}")
        quiet = (self.quiet_from, self.quiet_to)
        if (None in quiet) != (quiet == (None, None)):
            raise ValueError("quiet hours need both a start and an end")
        for value in quiet:
            if value is not None and not CLOCK.fullmatch(value):
                raise ValueError(f"quiet hours {value!r}: use HH:MM")
        if self.quiet_from is not None and self.quiet_from == self.quiet_to:
            raise ValueError("quiet hours start and end at the same time")

    def changes_from(self, old: Preferences) -> dict[str, tuple[str | None, str | None]]:
        """Field → (old, new) for what differs, categories as sorted comma lists."""
        changed = {}
        for field in fields(self):
            before, after = _text(getattr(old, field.name)), _text(getattr(self, field.name))
            if before != after:
                changed[field.name] = (before, after)
        return changed


def _text(value: str | frozenset[str] | None) -> str | None:
    if isinstance(value, frozenset):
        return ",".join(sorted(value)) or None
    return value


# Built once: every send reads the patient's choices.
_LOAD = select(PatientPreference.language, PatientPreference.channel,
               PatientPreference.quiet_from, PatientPreference.quiet_to,
               PatientPreference.categories_off).where(
    PatientPreference.patient == bindparam("patient"))


def load(session: Session, patient: str) -> Preferences:
    row = flushed_connection(session).execute(_LOAD, {"patient": patient}).first()
    return Preferences() if row is None else from_row(row)


def from_row(row: Any) -> Preferences:
    # A PatientPreference, or a row of _LOAD's columns.
    return Preferences(row.language, row.channel, row.quiet_from, row.quiet_to,
                       frozenset(filter(None, row.categories_off.split(","))))


def save(session: Session, patient: str, new: Preferences,
         now: datetime) -> dict[str, tuple[str | None, str | None]]:
    """Store the patient's choices; returns what changed (nothing is written when nothing did)."""
    row = session.get(PatientPreference, patient, with_for_update=True)
    changed = new.changes_from(Preferences() if row is None else from_row(row))
    if not changed:
        return changed
    if row is None:
        row = PatientPreference(patient=patient)
        session.add(row)
    row.language, row.channel = new.language, new.channel
    row.quiet_from, row.quiet_to = new.quiet_from, new.quiet_to
    row.categories_off = ",".join(sorted(new.categories_off))
    row.changed_at = now
    session.flush()
    return changed


def availability(session: Session, patient: str) -> str | None:
    """When the patient said they can come, as channels.availability codes, or None."""
    row = session.get(PatientPreference, patient)
    return None if row is None else row.availability


def save_availability(session: Session, patient: str, codes: str | None, now: datetime) -> bool:
    """Store when the patient can come; False when it is what we had."""
    row = session.get(PatientPreference, patient, with_for_update=True)
    if row is not None and row.availability == codes:
        return False
    if row is None:
        row = PatientPreference(patient=patient, categories_off="")
        session.add(row)
    row.availability, row.changed_at = codes, now
    session.flush()
    return True
