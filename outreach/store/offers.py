"""Offers of times as stored: the one a patient's reply answers, and claiming one so a single
answer books it however many arrive at once."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.store.models import Backfill, SlotOffer

# After its hold a reply to an offer is still read as its answer for this long, so the patient
# is told it expired instead of a staff Task being raised for "2".
ANSWERED_LATE = timedelta(days=1)


def new_uid() -> str:
    """Names an offer in its link: 64 random bits, no patient data. The link's own signature
    (128 bits) is what keeps others out; this only has to be unique, and short in an SMS."""
    return secrets.token_hex(8)


def latest_for(session: Session, address: str, now: datetime) -> SlotOffer | None:
    """The offer this number's reply answers: the newest one still open, or expired less than a
    day ago (its reply then learns it expired)."""
    return session.scalars(
        select(SlotOffer)
        .where(SlotOffer.address == address, SlotOffer.state.in_(("open", "expired")),
               SlotOffer.expires_at > now - ANSWERED_LATE)
        .order_by(SlotOffer.created_at.desc(), SlotOffer.id.desc()).limit(1)).first()


def claim(session: Session, offer_id: int, now: datetime) -> bool:
    """Move an open, unexpired offer to `booking`; False when another answer got there first or
    it has expired."""
    done = session.execute(
        update(SlotOffer).where(SlotOffer.id == offer_id, SlotOffer.state == "open",
                                SlotOffer.expires_at > now)
        .values(state="booking", answered_at=now))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def finish(session: Session, offer_id: int, state: str, now: datetime, *,
           reason: str | None = None, chosen: int | None = None,
           booked_start: datetime | None = None) -> None:
    session.execute(update(SlotOffer).where(SlotOffer.id == offer_id).values(
        state=state, answered_at=now, reason=(reason or "")[:200] or None, chosen=chosen,
        booked_start=booked_start))


def fill(session: Session, backfill_id: int, offer_id: int, now: datetime) -> bool:
    """The freed time goes to this offer's patient, unless another's YES came first."""
    done = session.execute(
        update(Backfill).where(Backfill.id == backfill_id, Backfill.state == "open")
        .values(state="filled", filled_by=offer_id, finished_at=now))
    return bool(done.rowcount)  # type: ignore[attr-defined]
