"""Apply a journey's decision about a change to the database: enroll, re-plan or cancel steps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import PENDING_STATES, Enrollment, ScheduledStep, StepState
from rules import Decision, PlannedStep, ResourceChange, decide, plan_steps
from rules.fhirpath import FhirPathError
from rules.loader import JourneySet, LoadedJourney
from rules.recipients import patient_reference

log = logging.getLogger(__name__)

# The time zone to plan a patient's quiet hours in, by patient reference.
ZoneLookup = Callable[[str], ZoneInfo]


@dataclass
class JourneyOutcome:
    journey: str
    action: str
    reason: str
    steps: list[ScheduledStep] = field(default_factory=list)


def _find(session: Session, journey: str, change: ResourceChange) -> Enrollment | None:
    query = select(Enrollment).where(
        Enrollment.journey == journey,
        Enrollment.resource_type == change.resource_type,
        Enrollment.resource_id == change.resource_id,
    )
    return session.scalars(query.with_for_update()).first()


def _place(step: ScheduledStep, planned: PlannedStep, now: datetime) -> None:
    step.due_at, step.updated_at = planned.due_at, now
    if planned.skip_reason:
        step.state, step.reason = StepState.SKIPPED, planned.skip_reason
    elif planned.due_at <= now:
        step.state, step.queued_at, step.reason = StepState.QUEUED, now, None
    else:
        step.state, step.reason = StepState.SCHEDULED, None


def _enroll(
    session: Session, journey: LoadedJourney, change: ResourceChange, decision: Decision,
    now: datetime, plans: list[PlannedStep], patient: str,
) -> list[ScheduledStep]:
    enrollment = Enrollment(
        journey=journey.name, journey_version=journey.version, patient=patient,
        resource_type=change.resource_type, resource_id=change.resource_id,
        anchor_at=decision.anchor_at, state="active", created_at=now, updated_at=now,
    )
    session.add(enrollment)
    steps = []
    for planned in plans:
        step = ScheduledStep(enrollment=enrollment, step_id=planned.step.id, attempts=0)
        _place(step, planned, now)
        session.add(step)
        steps.append(step)
    return steps


def _replannable(step: ScheduledStep) -> bool:
    # Pending steps, and steps skipped at planning time (never attempted) because they were
    # already late: a later appointment time can make them useful again.
    return step.state in PENDING_STATES or (step.state == StepState.SKIPPED and step.attempts == 0)


def _replan(
    enrollment: Enrollment, decision: Decision, now: datetime, plans: list[PlannedStep]
) -> list[ScheduledStep]:
    by_id = {p.step.id: p for p in plans}
    enrollment.anchor_at, enrollment.updated_at = decision.anchor_at, now
    changed = []
    for step in enrollment.steps:
        planned = by_id.get(step.step_id)
        if planned is not None and _replannable(step):
            _place(step, planned, now)
            changed.append(step)
    return changed


def _cancel(enrollment: Enrollment, reason: str, now: datetime) -> list[ScheduledStep]:
    enrollment.state, enrollment.reason, enrollment.updated_at = "cancelled", reason, now
    cancelled = []
    for step in enrollment.steps:
        if step.state in PENDING_STATES:
            step.state, step.reason, step.updated_at = StepState.CANCELLED, reason, now
            cancelled.append(step)
    return cancelled


def apply_journey(
    session: Session, journey: LoadedJourney, change: ResourceChange, now: datetime,
    zone_for: ZoneLookup,
) -> JourneyOutcome:
    enrollment = _find(session, journey.name, change)
    active = enrollment is not None and enrollment.state == "active"
    if enrollment is not None and not active:
        return JourneyOutcome(journey.name, "ignore", f"enrollment {enrollment.state}")
    decision = decide(journey, change, now, enrollment.anchor_at if enrollment else None, active)
    if decision.action == "cancel" and enrollment is not None:
        return JourneyOutcome(journey.name, "cancel", decision.reason,
                              _cancel(enrollment, decision.reason, now))
    if decision.action not in ("enroll", "replan") or decision.anchor_at is None:
        return JourneyOutcome(journey.name, "ignore", decision.reason)
    resource = change.resource or {}
    patient = enrollment.patient if enrollment else patient_reference(resource)
    if patient is None:
        return JourneyOutcome(journey.name, "ignore", "no Patient participant")
    plans = plan_steps(journey, decision.anchor_at, now, zone_for(patient))
    if enrollment is not None:
        return JourneyOutcome(journey.name, "replan", decision.reason,
                              _replan(enrollment, decision, now, plans))
    steps = _enroll(session, journey, change, decision, now, plans, patient)
    return JourneyOutcome(journey.name, "enroll", decision.reason, steps)


def apply_journeys(
    session: Session, journeys: JourneySet, change: ResourceChange, now: datetime,
    zone_for: ZoneLookup,
) -> list[JourneyOutcome]:
    """Run every journey for the change's resource type; one journey failing on this resource
    (e.g. FHIRPath on a missing element) is logged and skipped, the others still run."""
    outcomes = []
    for journey in journeys.for_resource(change.resource_type):
        try:
            with session.begin_nested():
                outcomes.append(apply_journey(session, journey, change, now, zone_for))
        except FhirPathError:
            log.exception("journey %s failed on %s", journey.spec.journey, change.reference)
            outcomes.append(JourneyOutcome(journey.name, "error", "condition failed"))
    return outcomes


def due_now(outcomes: Iterable[JourneyOutcome]) -> list[ScheduledStep]:
    return [s for o in outcomes for s in o.steps if s.state == StepState.QUEUED]
