"""Opt-out state per channel and address: STOP takes effect before the next send."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import ContactConsent


def normalize(channel: str, address: str) -> str:
    address = address.strip()
    return address.lower() if channel == "email" else address.replace(" ", "")


def is_opted_out(session: Session, channel: str, address: str) -> bool:
    query = select(ContactConsent.opted_out).where(
        ContactConsent.channel == channel,
        ContactConsent.address == normalize(channel, address),
    )
    return bool(session.scalar(query))


def set_opt_out(
    session: Session, channel: str, address: str, opted_out: bool, *, source: str,
    now: datetime, patient: str | None = None,
) -> bool:
    """Record the patient's choice; returns False when it was already so (no second
    confirmation for a repeated STOP)."""
    key = normalize(channel, address)
    row = session.scalars(select(ContactConsent).where(
        ContactConsent.channel == channel, ContactConsent.address == key).with_for_update()
    ).first()
    if row is None:
        if not opted_out:
            return False  # never opted out: nothing to undo
        session.add(ContactConsent(channel=channel, address=key, patient=patient,
                                   opted_out=True, source=source, changed_at=now))
        return True
    if row.opted_out == opted_out:
        return False
    row.opted_out, row.source, row.changed_at = opted_out, source, now
    row.patient = row.patient or patient
    return True
