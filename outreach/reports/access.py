"""The access loop's figures for a period: times offered (rescheduling by reply, the waitlist),
taken, and the days patients gained; over offers made in the period."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import Backfill, SlotOffer

KINDS = ("reschedule", "book", "waitlist")
# How an offer ended, as reported (`booking` is a moment, not an outcome: still open).
OUTCOMES = ("booked", "declined", "expired", "taken", "changed", "failed", "replaced", "open")


@dataclass(frozen=True, slots=True)
class OfferFact:
    kind: str  # reschedule | book | waitlist
    state: str
    patient: str
    original_start: datetime | None
    booked_start: datetime | None

    @property
    def days_gained(self) -> float | None:
        """Days sooner than the patient would have come; None when unknown or not booked."""
        if self.original_start is None or self.booked_start is None:
            return None
        return (self.original_start - self.booked_start) / timedelta(days=1)


def load_offers(session: Session, start: datetime, end: datetime, now: datetime
                ) -> tuple[list[OfferFact], Counter[str]]:
    """Offers sent in [start, end) (skipped patients are no offers), and how the backfills
    opened in it ended. An offer past its hold with no answer is expired, whether or not a
    sweep has marked it yet."""
    rows = session.execute(select(
        SlotOffer.kind, SlotOffer.state, SlotOffer.expires_at, SlotOffer.patient,
        SlotOffer.original_start, SlotOffer.booked_start).where(
        SlotOffer.created_at >= start, SlotOffer.created_at < end,
        SlotOffer.state.notin_(("skipped", "sending")))).all()
    backfills = Counter(session.scalars(select(Backfill.state).where(
        Backfill.created_at >= start, Backfill.created_at < end)))
    return [OfferFact(kind, "expired" if state == "open" and expires <= now else state,
                      patient, original, booked)
            for kind, state, expires, patient, original, booked in rows], backfills


def _kind(offers: list[OfferFact]) -> dict[str, Any]:
    states = Counter("open" if o.state == "booking" else o.state for o in offers)
    gained = [d for o in offers if o.state == "booked" and (d := o.days_gained) is not None]
    sooner = [d for d in gained if d > 0]
    return {
        "offers": len(offers),
        "patients": len({o.patient for o in offers}),
        **{state: states.get(state, 0) for state in OUTCOMES},
        "acceptance_rate": round(states["booked"] / len(offers), 4) if offers else None,
        "moved_sooner": len(sooner),
        "days_gained_total": round(sum(sooner), 1),
        "days_gained_median": round(median(sooner), 1) if sooner else None,
    }


def access_figures(offers: list[OfferFact], backfills: Counter[str]) -> dict[str, Any]:
    """`reschedule`, `book` (a new appointment, e.g. from a recall) and `waitlist` offer
    outcomes; `backfills`: freed times and how many were filled from the waitlist."""
    opened = sum(backfills.values())
    return {
        **{kind: _kind([o for o in offers if o.kind == kind]) for kind in KINDS},
        "backfills": {"freed": opened, "filled": backfills.get("filled", 0),
                      "open": backfills.get("open", 0),
                      "unfilled": backfills.get("exhausted", 0) + backfills.get("gone", 0),
                      "fill_rate": round(backfills["filled"] / opened, 4) if opened else None},
    }
