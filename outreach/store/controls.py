"""Journey controls staff set (a paused journey sends nothing until resumed); sending reads them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import JourneyControl

# How long a step of a paused journey waits before it is checked again.
PAUSE_RECHECK = timedelta(minutes=5)


# Built once: every send asks.
_PAUSED = select(JourneyControl.journey).where(JourneyControl.paused)


def paused_journeys(session: Session) -> set[str]:
    return set(session.connection().execute(_PAUSED).scalars())
