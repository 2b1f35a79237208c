"""Apply a journey's decision about a change to the database: enroll, re-plan or cancel steps."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CompoundSelect,
    Table,
    bindparam,
    insert,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session, make_transient_to_detached

from outreach.planning.outcomes import JourneyOutcome
from outreach.store.models import (
    PENDING_STATES,
    Enrollment,
    ResourceVersion,
    ScheduledStep,
    StepState,
)
from outreach.store.types import JsonDocument
from rules import Decision, PlannedStep, ResourceChange, decide, plan_steps
from rules.caps import CAP_WINDOW, DEFAULT_POLICY, CapPolicy, Send, counts_toward_caps
from rules.fhirpath import FhirPathError, SharedResults
from rules.loader import JourneySet, LoadedJourney
from rules.planner import enroll_decision
from rules.recipients import patient_reference, patient_timezone

log = logging.getLogger(__name__)

# The time zone to plan a patient's quiet hours in, by patient reference, when the patient's
# record (as last ingested) carries no timezone extension.
ZoneLookup = Callable[[str], ZoneInfo]
# States whose steps count toward the caps: sent, or still going to be.
_COUNTED = (StepState.SCHEDULED, StepState.QUEUED, StepState.SENDING, StepState.SENT)
_SEND_COLUMNS = (ScheduledStep.state, ScheduledStep.sent_at, ScheduledStep.due_at,
                 ScheduledStep.channel, ScheduledStep.step_id, Enrollment.journey)


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


def _as_send(
    row: Any, journeys: JourneySet | None, policy: CapPolicy
) -> Send | None:
    """One row of `_sends_query` as rules.caps counts it (None: it does not count)."""
    state, sent_at, due_at, channel, step_id, journey = row
    spec = journeys.step(journey, step_id) if journeys is not None else None
    if state == StepState.SENT and sent_at is not None:
        return Send(sent_at, channel or "sms", spec is not None and spec.cap_exempt)
    if spec is not None and counts_toward_caps(spec.channel, spec.cap_exempt, policy):
        return Send(due_at, next(c for c in spec.channel if c in policy.channels))
    return None


def _build_zone_and_sends(exclude: bool) -> CompoundSelect[*tuple[Any, ...]]:
    record = select(
        literal_column("1").label("marker"), ResourceVersion.resource.label("document"),
        *(type_coerce(null(), column.type).label(column.key) for column in _SEND_COLUMNS),
    ).where(ResourceVersion.resource_type == bindparam("rtype"),
            ResourceVersion.resource_id == bindparam("rid"))
    sends = (
        select(literal_column("0"), type_coerce(null(), JsonDocument), *_SEND_COLUMNS)
        .join_from(ScheduledStep, Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
        .where(Enrollment.patient == bindparam("patient"), ScheduledStep.state.in_(_COUNTED),
               or_(ScheduledStep.sent_at >= bindparam("since"),
                   ScheduledStep.due_at >= bindparam("since")),
               ScheduledStep.due_at <= bindparam("until"))
    )
    if exclude:
        # Re-planning an enrollment: its pending steps are being placed again and do not count,
        # but what it already sent does.
        sends = sends.where(or_(Enrollment.id != bindparam("exclude"),
                                ScheduledStep.state == StepState.SENT))
    return union_all(record, sends)


# Built once (with and without an enrollment to leave out): building and cache-keying this
# statement on every call cost more CPU than running it.
_ZONE_AND_SENDS = {exclude: _build_zone_and_sends(exclude) for exclude in (False, True)}


def _zone_and_sends(
    session: Session, patient: str, now: datetime, planning: Planning,
    exclude_enrollment: int | None,
) -> tuple[ZoneInfo, list[Send]]:
    """patient_zone and patient_sends in one round trip: the patient's stored record comes back
    as one extra row (marked 1) beside the send rows (marked 0)."""
    policy = planning.policy
    if policy is None:
        return patient_zone(session, patient, planning.zone_for), []
    rtype, _, rid = patient.partition("/")
    params: dict[str, Any] = {"rtype": rtype, "rid": rid, "patient": patient,
                              "since": now - CAP_WINDOW, "until": now + timedelta(days=400)}
    if exclude_enrollment is not None:
        params["exclude"] = exclude_enrollment
    query = _ZONE_AND_SENDS[exclude_enrollment is not None]
    document: dict[str, Any] | None = None
    found: list[Send] = []
    for marker, doc, *send in session.execute(query, params):
        if marker == 1:
            document = doc
        elif (counted := _as_send(send, planning.journeys, policy)) is not None:
            found.append(counted)
    return patient_timezone(document) or planning.zone_for(patient), found


def _placement(planned: PlannedStep, now: datetime) -> dict[str, Any]:
    """The step columns a plan sets: due time, and the state that goes with it."""
    # A step moved later says by what, until it is sent.
    note = f"deferred by {planned.deferred_by} when planned" if planned.deferred_by else None
    placed: dict[str, Any] = {"due_at": planned.due_at, "updated_at": now, "reason": note}
    if planned.skip_reason:
        placed.update(state=StepState.SKIPPED, reason=planned.skip_reason)
    elif planned.due_at <= now:
        placed.update(state=StepState.QUEUED, queued_at=now)
    else:
        placed.update(state=StepState.SCHEDULED)
    return placed


def _place(step: ScheduledStep, planned: PlannedStep, now: datetime) -> None:
    for name, value in _placement(planned, now).items():
        setattr(step, name, value)


def _plan(
    session: Session, journey: LoadedJourney, patient: str, anchor_at: datetime, now: datetime,
    planning: Planning, enrollment: Enrollment | None = None,
) -> list[PlannedStep]:
    """The steps' times; re-planning an `enrollment`, the steps it will not move take no room."""
    exclude = enrollment.id if enrollment is not None else None
    zone, sends = _zone_and_sends(session, patient, now, planning, exclude)
    settled = {s.step_id for s in enrollment.steps if not _replannable(s)} if enrollment else ()
    return plan_steps(journey, anchor_at, now, zone, sends, planning.policy, settled)


# Built once: constructing and cache-keying them per call was a visible share of the CPU.
_ENROLLMENTS = cast(Table, Enrollment.__table__)
_STEPS = cast(Table, ScheduledStep.__table__)
_INSERT_ENROLLMENT = insert(_ENROLLMENTS).returning(_ENROLLMENTS.c.id)
_INSERT_STEPS = insert(_STEPS).returning(_STEPS.c.id, sort_by_parameter_order=True)
# Objects for the outcomes (here and in first_sights), built without the ORM's per-attribute
# instrumentation (a quarter of a batch's CPU went to it): the rows are written by Core
# inserts, so the objects only carry their values, as loaded ones would.
_new_enrollment = Enrollment.__mapper__.class_manager.new_instance
_new_step = ScheduledStep.__mapper__.class_manager.new_instance


def _loaded(new: Any, values: dict[str, Any]) -> Any:
    made = new()
    made.__dict__.update(values)
    return made


def _enroll(
    session: Session, journey: LoadedJourney, resource: tuple[str, str], anchor_at: datetime,
    now: datetime, plans: list[PlannedStep], patient: str, cycle: str = "",
) -> list[ScheduledStep]:
    # Core inserts with RETURNING on the session's connection, one statement per table; the ORM
    # bulk insert's bookkeeping was the bulk of an enrollment's CPU. The objects hold every
    # column as a load would (datetimes in UTC); the enrollment joins the session, as a loaded
    # one would, so a later get in this transaction finds it without a query.
    connection = session.connection()
    values: dict[str, Any] = {
        "journey": journey.name, "journey_version": journey.version, "patient": patient,
        "resource_type": resource[0], "resource_id": resource[1], "cycle": cycle,
        "anchor_at": _utc(anchor_at), "state": "active", "reason": None, "created_at": now,
        "updated_at": now}
    values["id"] = connection.execute(_INSERT_ENROLLMENT, values).scalar_one()
    enrollment = _loaded(_new_enrollment, values)
    make_transient_to_detached(enrollment)
    session.add(enrollment)
    if not plans:
        return []
    rows = [{"uid": str(uuid.uuid4()), "enrollment_id": values["id"], "step_id": planned.step.id,
             "state": StepState.SCHEDULED, "attempts": 0, "reason": None, "channel": None,
             "excluded_channels": "", "queued_at": None, "sent_at": None,
             **_placement(planned, now)} for planned in plans]
    # Written now, so the next journey's cap check sees these steps.
    ids = connection.execute(_INSERT_STEPS, rows).scalars().all()
    steps = []
    for row, step_id in zip(rows, ids, strict=True):
        row["due_at"] = _utc(row["due_at"])
        steps.append(_loaded(_new_step, {**row, "id": step_id}))
    return steps


def _utc(moment: datetime | None) -> datetime | None:
    """As a UTC column reads it back."""
    return None if moment is None else moment.astimezone(UTC)


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


def _decide(
    journey: LoadedJourney, change: ResourceChange, now: datetime, enrollment: Enrollment | None,
    shared: SharedResults | None = None,
) -> Decision | JourneyOutcome:
    """The pure part: what the journey makes of the change (FhirPathError escapes from here
    only, before anything is written)."""
    active = enrollment is not None and enrollment.state == "active"
    if enrollment is not None and not active:
        # Never enroll the same resource twice in one journey (a cancelled booking re-booked
        # keeps its cancelled enrollment).
        return JourneyOutcome(journey.name, "ignore", f"enrollment {enrollment.state}")
    return decide(journey, change, now, enrollment.anchor_at if enrollment else None, active,
                  shared)


def _carry_out(
    session: Session, journey: LoadedJourney, change: ResourceChange, now: datetime,
    planning: Planning, enrollment: Enrollment | None, decision: Decision,
) -> JourneyOutcome:
    if decision.action == "cancel" and enrollment is not None:
        return JourneyOutcome(journey.name, "cancel", decision.reason,
                              _cancel(enrollment, decision.reason, now), enrollment)
    if decision.action not in ("enroll", "replan") or decision.anchor_at is None:
        return JourneyOutcome(journey.name, "ignore", decision.reason)
    resource = change.resource or {}
    patient = enrollment.patient if enrollment else patient_reference(resource)
    if patient is None:
        return JourneyOutcome(journey.name, "ignore", "no Patient participant")
    if enrollment is not None:
        plans = _plan(session, journey, patient, decision.anchor_at, now, planning, enrollment)
        return JourneyOutcome(journey.name, "replan", decision.reason,
                              _replan(enrollment, decision, now, plans), enrollment)
    plans = _plan(session, journey, patient, decision.anchor_at, now, planning)
    steps = _enroll(session, journey, (change.resource_type, change.resource_id),
                    decision.anchor_at, now, plans, patient)
    return JourneyOutcome(journey.name, "enroll", decision.reason, steps)


def _enrollments(
    session: Session, journeys: list[LoadedJourney], change: ResourceChange
) -> dict[str, Enrollment]:
    """The resource's enrollments in these journeys, locked, in one query (the unique key
    starts with the journey name, so the IN list keeps it an index lookup)."""
    query = select(Enrollment).where(
        Enrollment.journey.in_([j.name for j in journeys]),
        Enrollment.resource_type == change.resource_type,
        Enrollment.resource_id == change.resource_id,
        Enrollment.cycle == "",
    )
    return {e.journey: e for e in session.scalars(query.with_for_update())}


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
    zone_for: ZoneLookup, *, may_be_enrolled: bool = True,
    policy: CapPolicy = DEFAULT_POLICY,
) -> list[JourneyOutcome]:
    """Run every journey for the change's resource type; one journey failing on this resource
    (e.g. FHIRPath on a missing element) is logged and skipped, the others still run.

    `may_be_enrolled=False` (the caller knows the resource has never been stored, so no journey
    can have enrolled it) skips the enrollment lookup: a change no trigger matches then costs no
    query at all."""
    candidates = journeys.for_resource(change.resource_type)
    if not candidates:
        return []
    planning = Planning(zone_for, journeys, policy)
    found = _enrollments(session, candidates, change) if may_be_enrolled else {}
    outcomes = []
    # Journeys sharing a condition (same source) evaluate it once for this change.
    shared = (SharedResults(change.current, change.previous, now)
              if change.current is not None else None)
    for journey in candidates:
        enrollment = found.get(journey.name)
        # Conditions are evaluated before this journey writes anything, so a failing one needs
        # no savepoint to leave the transaction as it was.
        try:
            decided = _decide(journey, change, now, enrollment, shared)
        except FhirPathError:
            log.exception("journey %s failed on %s", journey.spec.journey, change.reference)
            outcomes.append(JourneyOutcome(journey.name, "error", "condition failed"))
            continue
        if isinstance(decided, JourneyOutcome):
            outcomes.append(decided)
        else:
            outcomes.append(
                _carry_out(session, journey, change, now, planning, enrollment, decided))
    return outcomes
