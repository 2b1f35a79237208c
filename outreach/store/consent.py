"""Opt-out state per channel and address: STOP takes effect before the next send."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from channels.phones import e164
from outreach.store.db import flushed_connection
from outreach.store.models import ContactConsent


def normalize(channel: str, address: str, country_code: str | None = None) -> str:
    """The one spelling an address is kept and compared in: lower-case email, E.164 phone (a
    national number with `country_code`, the deployment's default)."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    return e164(address, country_code) or address.replace(" ", "")


# Built once: every send asks (one expanding IN of (channel, address) pairs).
_OPTED_OUT = select(ContactConsent.channel, ContactConsent.address).where(
    ContactConsent.opted_out.is_(True),
    tuple_(ContactConsent.channel, ContactConsent.address).in_(
        bindparam("pairs", expanding=True)))


def opted_out(
    session: Session, contacts: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (channel, address) pairs the patient has opted out of, in one query."""
    if not contacts:
        return set()
    asked = spellings(contacts)
    rows = flushed_connection(session).execute(_OPTED_OUT, {"pairs": list(asked)})
    return {pair for channel, address in rows for pair in asked[(channel, address)]}


def spellings(contacts: Sequence[tuple[str, str]]
              ) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Each (channel, address) as kept, and the pairs asked that spell it: two spellings of
    one address are both answered."""
    asked: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for channel, address in contacts:
        asked.setdefault((channel, normalize(channel, address)), []).append((channel, address))
    return asked


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
