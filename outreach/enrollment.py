"""Apply a journey's decision about a change to the database: enroll, re-plan or cancel steps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from outreach.store.models import (
    PENDING_STATES,
    Enrollment,
    ResourceVersion,
    ScheduledStep,
    StepState,
)
from rules import Decision, PlannedStep, ResourceChange, decide, plan_steps
from rules.caps import DEFAULT_POLICY, CapPolicy, Send, counts_toward_caps
from rules.fhirpath import FhirPathError
from rules.loader import JourneySet, LoadedJourney
from rules.planner import enroll_decision
from rules.recipients import patient_reference, patient_timezone

log = logging.getLogger(__name__)

# The time zone to plan a patient's quiet hours in, by patient reference, when the patient's
# record (as last ingested) carries no timezone extension.
ZoneLookup = Callable[[str], ZoneInfo]
# States whose steps count toward the caps: sent, or still going to be.
_COUNTED = (StepState.SCHEDULED, StepState.QUEUED, StepState.SENDING, StepState.SENT)
# Caps look at most 7 local days either side; a day more covers any time zone.
_CAP_WINDOW = timedelta(days=8)


@dataclass
class JourneyOutcome:
    journey: str
    action: str
    reason: str
    steps: list[ScheduledStep] = field(default_factory=list)


@dataclass(frozen=True)
class Planning:
    """What planning needs besides the journey: zones, the other journeys (to know which of a
    patient's steps are cap-exempt), the cap policy."""

    zone_for: ZoneLookup
    journeys: JourneySet | None = None
    policy: CapPolicy | None = DEFAULT_POLICY


def _find(session: Session, journey: str, resource_type: str, resource_id: str,
          cycle: str = "") -> Enrollment | None:
    query = select(Enrollment).where(
        Enrollment.journey == journey,
        Enrollment.resource_type == resource_type,
        Enrollment.resource_id == resource_id,
        Enrollment.cycle == cycle,
    )
    return session.scalars(query.with_for_update()).first()


def patient_zone(session: Session, patient: str, fallback: ZoneLookup) -> ZoneInfo:
    """The timezone extension of the patient's last ingested record, else the fallback."""
    rtype, _, rid = patient.partition("/")
    known = session.get(ResourceVersion, (rtype, rid))
    record: dict[str, Any] | None = known.resource if known is not None else None
    return patient_timezone(record) or fallback(patient)


def _step_spec(journeys: JourneySet | None, journey: str, step_id: str) -> Any:
    found = journeys.by_name(journey) if journeys is not None else None
    if found is None:
        return None
    return next((s for s in found.spec.steps if s.id == step_id), None)


def patient_sends(
    session: Session, patient: str, around: datetime, journeys: JourneySet | None,
    policy: CapPolicy, exclude_enrollment: int | None = None,
) -> list[Send]:
    """The patient's sent and scheduled messages near `around`, as rules.caps sees them."""
    since, until = around - _CAP_WINDOW, around + timedelta(days=400)
    query = (
        select(ScheduledStep, Enrollment.journey)
        .join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
        .where(Enrollment.patient == patient, ScheduledStep.state.in_(_COUNTED),
               or_(ScheduledStep.sent_at >= since, ScheduledStep.due_at >= since),
               ScheduledStep.due_at <= until)
    )
    if exclude_enrollment is not None:
        query = query.where(Enrollment.id != exclude_enrollment)
    sends = []
    for step, journey in session.execute(query).all():
        spec = _step_spec(journeys, journey, step.step_id)
        if step.state == StepState.SENT and step.sent_at is not None:
            exempt = spec is not None and spec.cap_exempt
            sends.append(Send(step.sent_at, step.channel or "sms", exempt))
        elif spec is not None and counts_toward_caps(spec.channel, spec.cap_exempt, policy):
            sends.append(Send(step.due_at, next(c for c in spec.channel if c in policy.channels)))
    return sends


def sent_recently(session: Session, patient: str, now: datetime, journeys: JourneySet,
                  exclude_step: int | None = None) -> list[Send]:
    """What the patient was actually sent in the last cap window (the send-time re-check counts
    only these: planned steps of other journeys do not hold this one back)."""
    query = (
        select(ScheduledStep.sent_at, ScheduledStep.channel, ScheduledStep.step_id,
               Enrollment.journey)
        .join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
        .where(Enrollment.patient == patient, ScheduledStep.state == StepState.SENT,
               ScheduledStep.sent_at >= now - _CAP_WINDOW)
    )
    if exclude_step is not None:
        query = query.where(ScheduledStep.id != exclude_step)
    sends = []
    for at, channel, step_id, journey in session.execute(query):
        spec = _step_spec(journeys, journey, step_id)
        if at is not None:
            sends.append(Send(at, channel or "sms", spec is not None and spec.cap_exempt))
    return sends


def _place(step: ScheduledStep, planned: PlannedStep, now: datetime) -> None:
    step.due_at, step.updated_at = planned.due_at, now
    if planned.skip_reason:
        step.state, step.reason = StepState.SKIPPED, planned.skip_reason
    elif planned.due_at <= now:
        step.state, step.queued_at, step.reason = StepState.QUEUED, now, None
    else:
        step.state, step.reason = StepState.SCHEDULED, None


def _plan(
    session: Session, journey: LoadedJourney, patient: str, anchor_at: datetime, now: datetime,
    planning: Planning, exclude_enrollment: int | None = None,
) -> list[PlannedStep]:
    zone = patient_zone(session, patient, planning.zone_for)
    sends: list[Send] = []
    if planning.policy is not None:
        sends = patient_sends(session, patient, now, planning.journeys, planning.policy,
                              exclude_enrollment)
    return plan_steps(journey, anchor_at, now, zone, sends, planning.policy)


def _enroll(
    session: Session, journey: LoadedJourney, resource: tuple[str, str], anchor_at: datetime,
    now: datetime, plans: list[PlannedStep], patient: str, cycle: str = "",
) -> list[ScheduledStep]:
    enrollment = Enrollment(
        journey=journey.name, journey_version=journey.version, patient=patient,
        resource_type=resource[0], resource_id=resource[1], cycle=cycle,
        anchor_at=anchor_at, state="active", created_at=now, updated_at=now,
    )
    session.add(enrollment)
    steps = []
    for planned in plans:
        step = ScheduledStep(enrollment=enrollment, step_id=planned.step.id, attempts=0)
        _place(step, planned, now)
        session.add(step)
        steps.append(step)
    session.flush()  # the next journey's cap check sees these steps
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
    zone_for: ZoneLookup | Planning,
) -> JourneyOutcome:
    planning = zone_for if isinstance(zone_for, Planning) else Planning(zone_for)
    enrollment = _find(session, journey.name, change.resource_type, change.resource_id)
    active = enrollment is not None and enrollment.state == "active"
    if enrollment is not None and not active:
        # Never enroll the same resource twice in one journey (a cancelled booking re-booked
        # keeps its cancelled enrollment).
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
    if enrollment is not None:
        plans = _plan(session, journey, patient, decision.anchor_at, now, planning, enrollment.id)
        return JourneyOutcome(journey.name, "replan", decision.reason,
                              _replan(enrollment, decision, now, plans))
    plans = _plan(session, journey, patient, decision.anchor_at, now, planning)
    steps = _enroll(session, journey, (change.resource_type, change.resource_id),
                    decision.anchor_at, now, plans, patient)
    return JourneyOutcome(journey.name, "enroll", decision.reason, steps)


def enroll_resource(
    session: Session, journey: LoadedJourney, resource: dict[str, Any], now: datetime,
    planning: Planning, cycle: str, reason: str,
) -> JourneyOutcome:
    """Enroll a resource found by a scheduled journey's search, once per cycle."""
    rtype, rid = resource["resourceType"], resource["id"]
    if _find(session, journey.name, rtype, rid, cycle) is not None:
        return JourneyOutcome(journey.name, "ignore", f"already enrolled for cycle {cycle!r}")
    decision = enroll_decision(journey, resource, now, reason)
    patient = patient_reference(resource)
    if decision.anchor_at is None or patient is None:
        why = decision.reason if decision.anchor_at is None else "no Patient"
        return JourneyOutcome(journey.name, "ignore", why)
    plans = _plan(session, journey, patient, decision.anchor_at, now, planning)
    steps = _enroll(session, journey, (rtype, rid), decision.anchor_at, now, plans, patient,
                    cycle)
    return JourneyOutcome(journey.name, "enroll", reason, steps)


def apply_journeys(
    session: Session, journeys: JourneySet, change: ResourceChange, now: datetime,
    zone_for: ZoneLookup,
) -> list[JourneyOutcome]:
    """Run every journey for the change's resource type; one journey failing on this resource
    (e.g. FHIRPath on a missing element) is logged and skipped, the others still run."""
    planning = Planning(zone_for, journeys)
    outcomes = []
    for journey in journeys.for_resource(change.resource_type):
        try:
            with session.begin_nested():
                outcomes.append(apply_journey(session, journey, change, now, planning))
        except FhirPathError:
            log.exception("journey %s failed on %s", journey.spec.journey, change.reference)
            outcomes.append(JourneyOutcome(journey.name, "error", "condition failed"))
    return outcomes


def due_now(outcomes: Iterable[JourneyOutcome]) -> list[ScheduledStep]:
    return [s for o in outcomes for s in o.steps if s.state == StepState.QUEUED]
