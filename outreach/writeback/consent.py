"""A patient's choice about a channel, recorded in our consent table (it takes effect before the
next send) and written back to the EHR as a FHIR Consent."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from connector.consent import ContactChoice, build_consent
from outreach.store.consent import normalize, set_opt_out
from outreach.writeback import outbox


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
    choice = ContactChoice(system, f"consent-{uuid.uuid4()}", patient, channel,
                           normalize(channel, address), opted_out, now, source)
    row = outbox.queue(session, build_consent(choice), system, choice.identifier_value, now,
                       known_new=True)
    return True, [row.id]
