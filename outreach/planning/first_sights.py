"""Planning for many first sights at once (batch ingest): the same decisions, plans and rows as
`apply_journeys(..., may_be_enrolled=False)` one change at a time, in a few set-based statements.

The caller guarantees the changes are first sights (no enrollment can exist) of distinct
resources for distinct patients: one change's plan can then never depend on another's steps, so
every patient's zone and sends are read in one query before anything is written."""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from outreach.planning.enrollment import (
    _COUNTED,
    Planning,
    _as_send,
    _decide,
    _placement,
)
from outreach.planning.outcomes import JourneyOutcome
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.store.types import JsonDocument, UTCDateTime
from rules import Decision, ResourceChange, plan_steps
from rules.caps import CAP_WINDOW, Send, counts_toward_caps
from rules.fhirpath import FhirPathError, SharedResults
from rules.loader import LoadedJourney
from rules.recipients import patient_reference, patient_timezone

log = logging.getLogger(__name__)

# Set-based inserts with a constant text and the rows as one JSON array: a multi-row VALUES
# statement is new text for every batch size (re-parsed by the driver each time), and arrays of
# strings are escaped element by element in Python. Ids come from the sequence in ORDER BY
# order, so the sorted ids line up with the input rows.
_INSERT_ENROLLMENTS = text("""
INSERT INTO enrollments (journey, journey_version, patient, resource_type, resource_id, cycle,
                         anchor_at, state, created_at, updated_at)
SELECT n.journey, n.journey_version, n.patient, n.resource_type, n.resource_id, '',
       n.anchor_at, 'active', :now, :now
FROM json_to_recordset(CAST(:rows AS json))
     AS n(journey varchar, journey_version varchar, patient varchar, resource_type varchar,
          resource_id varchar, anchor_at timestamptz, ord integer)
ORDER BY n.ord
RETURNING id""")
_INSERT_STEPS = text("""
INSERT INTO scheduled_steps (uid, enrollment_id, step_id, due_at, state, attempts, reason,
                             excluded_channels, queued_at, updated_at)
SELECT n.uid, n.enrollment_id, n.step_id, n.due_at, n.state, 0, n.reason, '', n.queued_at, :now
FROM json_to_recordset(CAST(:rows AS json))
     AS n(uid varchar, enrollment_id integer, step_id varchar, due_at timestamptz,
          state varchar, reason text, queued_at timestamptz, ord integer)
ORDER BY n.ord
RETURNING id""")


def as_json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows for json_to_recordset (datetimes as ISO 8601 with their offset), each with its
    position as `ord`."""
    return json.dumps([{**row, "ord": i} for i, row in enumerate(rows)],
                      default=datetime.isoformat)


def _insert_enrollments(session: Session, rows: list[dict[str, Any]]) -> list[Enrollment]:
    """One statement for all the batch's enrollments; the rows as (detached) objects."""
    found = session.connection().execute(_INSERT_ENROLLMENTS, {
        "now": rows[0]["created_at"], "rows": as_json_rows(rows)})
    ids = sorted(found.scalars())
    return [Enrollment(id=row_id, **row) for row_id, row in zip(ids, rows, strict=True)]


def _insert_steps(
    session: Session, rows: list[dict[str, Any]], now: datetime
) -> list[ScheduledStep]:
    """One statement for all the batch's steps; the rows as (detached) objects."""
    if not rows:
        return []
    for row in rows:
        row["uid"] = str(uuid.uuid4())
    found = session.connection().execute(_INSERT_STEPS, {"now": now, "rows": as_json_rows(rows)})
    ids = sorted(found.scalars())
    return [ScheduledStep(id=row_id, excluded_channels="", **row)
            for row_id, row in zip(ids, rows, strict=True)]


@dataclass
class _Pending:
    """A journey's decision to enroll a change, waiting for its plan."""

    change: int
    slot: int
    journey: LoadedJourney
    decision: Decision
    patient: str


def _decisions(
    journeys: Any, changes: list[ResourceChange], now: datetime,
) -> tuple[list[list[JourneyOutcome | None]], list[_Pending]]:
    """What every journey makes of every change (pure); enrollments wait for their plan."""
    outcomes: list[list[JourneyOutcome | None]] = []
    pending: list[_Pending] = []
    for index, change in enumerate(changes):
        mine: list[JourneyOutcome | None] = []
        outcomes.append(mine)
        candidates = journeys.for_resource(change.resource_type)
        if not candidates:
            continue
        shared = (SharedResults(change.current, change.previous, now)
                  if change.current is not None else None)
        for journey in candidates:
            try:
                decided = _decide(journey, change, now, None, shared)
            except FhirPathError:
                log.exception("journey %s failed on %s", journey.spec.journey, change.reference)
                mine.append(JourneyOutcome(journey.name, "error", "condition failed"))
                continue
            if isinstance(decided, JourneyOutcome):
                mine.append(decided)
            elif decided.action not in ("enroll", "replan") or decided.anchor_at is None:
                mine.append(JourneyOutcome(journey.name, "ignore", decided.reason))
            elif (patient := patient_reference(change.resource or {})) is None:
                mine.append(JourneyOutcome(journey.name, "ignore", "no Patient participant"))
            else:
                pending.append(_Pending(index, len(mine), journey, decided, patient))
                mine.append(None)
    return outcomes, pending


# Every patient's stored record (marker 1) and counted sends (marker 0) in one round trip.
# Each LATERAL step (kept apart by OFFSET 0, else it is flattened into a join) goes by index
# from the patient to its record, enrollments and steps: a plain join left the order to the
# planner, which on tables not analyzed yet (a first backfill) scanned them whole per row.
_ZONES_AND_SENDS = text("""
WITH p AS (SELECT DISTINCT patient FROM json_to_recordset(CAST(:patients AS json))
           AS j(patient varchar))
SELECT p.patient, 1 AS marker, v.resource, NULL AS state, NULL AS sent_at, NULL AS due_at,
       NULL AS channel, NULL AS step_id, NULL AS journey
FROM p CROSS JOIN LATERAL (
    SELECT resource FROM resource_versions
    WHERE resource_type = split_part(p.patient, '/', 1)
      AND resource_id = split_part(p.patient, '/', 2) OFFSET 0) v
UNION ALL
SELECT p.patient, 0, NULL, s.state, s.sent_at, s.due_at, s.channel, s.step_id, e.journey
FROM p CROSS JOIN LATERAL (
    SELECT id, journey FROM enrollments WHERE patient = p.patient OFFSET 0) e
CROSS JOIN LATERAL (
    SELECT state, sent_at, due_at, channel, step_id FROM scheduled_steps
    WHERE enrollment_id = e.id AND state = ANY(CAST(:counted AS varchar[]))
      AND (sent_at >= :since OR due_at >= :since) AND due_at <= :until OFFSET 0) s
""").columns(resource=JsonDocument, sent_at=UTCDateTime(), due_at=UTCDateTime())


def _zones_and_sends(
    session: Session, patients: set[str], now: datetime, planning: Planning,
) -> tuple[dict[str, Any], dict[str, list[Send]]]:
    """Every patient's stored record and counted sends, for the whole batch at once."""
    rows = session.connection().execute(_ZONES_AND_SENDS, {
        "patients": json.dumps([{"patient": p} for p in patients]),
        "counted": [str(state) for state in _COUNTED], "since": now - CAP_WINDOW,
        "until": now + timedelta(days=400)})
    documents: dict[str, Any] = {}
    sends: dict[str, list[Send]] = defaultdict(list)
    policy = planning.policy
    for patient, marker, document, *send in rows:
        if marker == 1:
            documents[patient] = document
        elif policy is not None and (
                counted := _as_send(send, planning.journeys, policy)) is not None:
            sends[patient].append(counted)
    return documents, sends


def _as_planned_sends(
    journey: LoadedJourney, rows: list[dict[str, Any]], now: datetime, planning: Planning,
) -> list[Send]:
    """The steps just planned as the sends query would return them to the patient's next
    journey (the one-at-a-time path writes them first, then reads them back)."""
    policy = planning.policy
    if policy is None:
        return []
    found = []
    for row in rows:
        spec = journey.step(row["step_id"])
        if row["state"] == StepState.SKIPPED or spec is None:
            continue
        if not now - CAP_WINDOW <= row["due_at"] <= now + timedelta(days=400):
            continue
        if counts_toward_caps(spec.channel, spec.cap_exempt, policy):
            found.append(Send(row["due_at"], next(c for c in spec.channel
                                                   if c in policy.channels)))
    return found


Enrolled = list[tuple[Enrollment, list[ScheduledStep]]]


def plan_first_sights(
    session: Session, changes: list[ResourceChange], now: datetime, planning: Planning,
) -> tuple[list[list[JourneyOutcome]], Enrolled]:
    """Each change's journey outcomes, in the order `apply_journeys` gives them, and the new
    enrollments with their steps (for their CommunicationRequests)."""
    assert planning.journeys is not None
    outcomes, pending = _decisions(planning.journeys, changes, now)
    if not pending:
        return [[o for o in mine if o is not None] for mine in outcomes], []
    documents, sends = _zones_and_sends(session, {p.patient for p in pending}, now, planning)
    enrollment_rows: list[dict[str, Any]] = []
    step_rows: list[list[dict[str, Any]]] = []
    for item in pending:  # in change order, then journey order: as one at a time
        change = changes[item.change]
        zone = patient_timezone(documents.get(item.patient)) or planning.zone_for(item.patient)
        plans = plan_steps(item.journey, item.decision.anchor_at or now, now, zone,
                           sends[item.patient], planning.policy)
        rows = [{"step_id": planned.step.id, "attempts": 0, "queued_at": None,
                 **_placement(planned, now)} for planned in plans]
        # The patient's next journey sees these steps, as it would once they are written.
        sends[item.patient] += _as_planned_sends(item.journey, rows, now, planning)
        enrollment_rows.append({
            "journey": item.journey.name, "journey_version": item.journey.version,
            "patient": item.patient, "resource_type": change.resource_type,
            "resource_id": change.resource_id, "cycle": "", "anchor_at": item.decision.anchor_at,
            "state": "active", "created_at": now, "updated_at": now})
        step_rows.append(rows)
    enrollments = _insert_enrollments(session, enrollment_rows)
    inserted = iter(_insert_steps(session, [
        {"enrollment_id": enrollment.id, **row}
        for enrollment, rows in zip(enrollments, step_rows, strict=True) for row in rows], now))
    enrolled: Enrolled = []
    for item, enrollment, rows in zip(pending, enrollments, step_rows, strict=True):
        steps = [next(inserted) for _ in rows]
        outcomes[item.change][item.slot] = JourneyOutcome(
            item.journey.name, "enroll", item.decision.reason, steps)
        enrolled.append((enrollment, steps))
    return [[o for o in mine if o is not None] for mine in outcomes], enrolled
