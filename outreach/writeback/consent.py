"""A patient's choices, recorded in our tables (they take effect before the next send), audited,
and written back to the EHR: a FHIR Consent per opt-out or opt-in, a Communication for the
other preferences."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from connector.consent import (
    ContactChoice,
    PreferencesNote,
    build_consent,
    build_preferences_communication,
)
from outreach.store.consent import normalize, set_opt_out
from outreach.store.models import AuditEntry
from outreach.store.preferences import Preferences, save
from outreach.writeback import outbox


def _queue_consent(session: Session, choice: ContactChoice, now: datetime) -> int:
    row = outbox.queue(session, build_consent(choice), choice.identifier_system,
                       choice.identifier_value, now, known_new=True)
    return row.id


def record_choice(
    session: Session, system: str, channel: str, address: str, opted_out: bool, *,
    source: str, now: datetime, patient: str | None,
) -> tuple[bool, list[int]]:
    """(changed, outbox rows to enqueue after commit). A repeated choice changes nothing and
    writes nothing. Without a known patient the choice is kept here only: an R4 privacy Consent
    must name its patient."""
    if not set_opt_out(session, channel, address, opted_out, source=source, now=now,
                       patient=patient):
        return False, []
    if patient is None:
        return True, []
    choice = ContactChoice(system, f"consent-{uuid.uuid4()}", patient, opted_out, now, source,
                           channel=channel, address=normalize(channel, address))
    return True, [_queue_consent(session, choice, now)]


_FIELD_WORDS = {"language": "language", "channel": "preferred channel",
                "quiet_from": "quiet hours from", "quiet_to": "quiet hours until"}


def record_preferences(
    session: Session, system: str, patient: str, new: Preferences, *, actor: str,
    now: datetime,
) -> tuple[dict[str, tuple[str | None, str | None]], list[int]]:
    """Store the patient's preferences, audit what changed, and queue its write-back: a Consent
    per category opted out of or back in to, one Communication for the rest. Returns (changes,
    outbox rows to enqueue after commit); nothing is written when nothing changed."""
    changes = save(session, patient, new, now)
    if not changes:
        return changes, []
    session.add(AuditEntry(at=now, actor=actor, action="preferences.update", target=patient,
                           detail={name: list(pair) for name, pair in changes.items()}))
    rows = []
    if "categories_off" in changes:
        before, after = (set(filter(None, (v or "").split(","))) for v in changes["categories_off"])
        for category in sorted(before ^ after):
            choice = ContactChoice(system, f"consent-{uuid.uuid4()}", patient,
                                   category in after, now, "preferences", category=category)
            rows.append(_queue_consent(session, choice, now))
    said = [f"{_FIELD_WORDS[name]}: {old or 'not set'} → {new_value or 'not set'}"
            for name, (old, new_value) in changes.items() if name in _FIELD_WORDS]
    if said:
        note = PreferencesNote(system, f"preferences-{uuid.uuid4()}", patient, now, tuple(said))
        row = outbox.queue(session, build_preferences_communication(note), system,
                           note.identifier_value, now, known_new=True)
        rows.append(row.id)
    return changes, rows
