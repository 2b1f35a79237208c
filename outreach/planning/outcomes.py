"""What planning did for one journey (enrolled, re-planned, cancelled, ignored), and the
CommunicationRequests that make those steps visible in the EHR."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.writeback import outbox
from outreach.writeback.communication_requests import queue_requests
from rules.loader import JourneySet


@dataclass
class JourneyOutcome:
    journey: str
    action: str
    reason: str
    steps: list[ScheduledStep] = field(default_factory=list)
    enrollment: Enrollment | None = None  # when the outcome changed an existing enrollment


def due_now(outcomes: Iterable[JourneyOutcome]) -> list[int]:
    """The steps planning queued for sending at once (a booking confirmation)."""
    return [s.id for o in outcomes for s in o.steps if s.state == StepState.QUEUED]


def queue_for_outcomes(
    session: Session, system: str, journeys: JourneySet, outcomes: Iterable[JourneyOutcome],
    now: datetime,
) -> list[int]:
    """The CommunicationRequests of every step these outcomes enrolled, re-planned or
    cancelled, queued in the outbox; returns the rows to enqueue after commit."""
    if session.info.get(outbox.DROP_WRITEBACKS):  # none would be stored: look nothing up
        return []
    ids = []
    for outcome in outcomes:
        if outcome.action not in ("enroll", "replan", "cancel") or not outcome.steps:
            continue
        enrollment = outcome.enrollment or session.get_one(
            Enrollment, outcome.steps[0].enrollment_id)
        ids += queue_requests(session, system, journeys, enrollment, outcome.steps, now,
                              first=outcome.action == "enroll")
    return ids
