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
from sqlalchemy.orm import Session, configure_mappers

from outreach.planning.enrollment import (
    _COUNTED,
    Planning,
    _as_send,
    _decide,
    _loaded,
    _new_enrollment,
    _new_step,
    _placement,
)
from outreach.planning.outcomes import JourneyOutcome
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.store.types import JsonDocument, UTCDateTime
from outreach.writeback.communication_requests import new_request_rows
from rules import Decision, ResourceChange, plan_steps
from rules.caps import CAP_WINDOW, Send, counts_toward_caps
from rules.fhirpath import FhirPathError, SharedResults
from rules.loader import JourneySet, LoadedJourney
from rules.recipients import patient_reference, patient_timezone

log = logging.getLogger(__name__)

Enrolled = list[tuple[Enrollment, list[ScheduledStep]]]

# The batch's enrollments, their steps and the steps' CommunicationRequest outbox rows in one
# statement: constant text, the rows as JSON arrays (a multi-row VALUES statement is new text
# for every batch size, re-parsed by the driver each time). Steps find their enrollment by its
# unique key; the foreign key is checked at the end of the statement, once both exist.
_WRITE = text("""
WITH e AS (
    INSERT INTO enrollments (journey, journey_version, patient, resource_type, resource_id,
                             cycle, anchor_at, state, created_at, updated_at)
    SELECT n.journey, n.journey_version, n.patient, n.resource_type, n.resource_id, '',
           n.anchor_at, 'active', :now, :now
    FROM json_to_recordset(CAST(:enrollments AS json))
         AS n(journey varchar, journey_version varchar, patient varchar, resource_type varchar,
              resource_id varchar, anchor_at timestamptz)
    RETURNING id, journey, resource_type, resource_id),
s AS (
    INSERT INTO scheduled_steps (uid, enrollment_id, step_id, due_at, state, attempts, reason,
                                 excluded_channels, queued_at, updated_at)
    SELECT n.uid, e.id, n.step_id, n.due_at, n.state, 0, n.reason, '', n.queued_at, :now
    FROM json_to_recordset(CAST(:steps AS json))
         AS n(uid varchar, journey varchar, resource_type varchar, resource_id varchar,
              step_id varchar, due_at timestamptz, state varchar, reason text,
              queued_at timestamptz)
    JOIN e ON e.journey = n.journey AND e.resource_type = n.resource_type
          AND e.resource_id = n.resource_id
    RETURNING id, uid),
w AS (
    INSERT INTO writebacks (resource_type, identifier, resource, operation, state, attempts,
                            next_attempt_at, created_at)
    SELECT n.resource_type, n.identifier, n.resource, 'create', 'pending', 0, :now, :now
    FROM json_to_recordset(CAST(:writebacks AS json))
         AS n(resource_type varchar, identifier varchar, resource jsonb)
    RETURNING id)
SELECT 1 AS kind, id, journey || '|' || resource_type || '|' || resource_id AS key FROM e
UNION ALL SELECT 2, id, uid FROM s
UNION ALL SELECT 3, id, NULL FROM w""")


def as_json(rows: list[dict[str, Any]]) -> str:
    """Rows for json_to_recordset (datetimes as ISO 8601 with their offset)."""
    return json.dumps(rows, default=datetime.isoformat)


def _write(
    session: Session, enrolled: Enrolled, step_rows: list[dict[str, Any]], writebacks: str,
    now: datetime,
) -> list[int]:
    """Insert the enrollments, steps (`step_rows`: their JSON rows) and outbox rows
    (`writebacks`: their JSON array); ids are set on the objects, the outbox row ids returned
    (to enqueue after commit)."""
    found = session.connection().execute(_WRITE, {
        "now": now,
        "enrollments": as_json([{c: e.__dict__[c] for c in _ENROLLMENT_COLUMNS}
                                for e, _ in enrolled]),
        "steps": as_json(step_rows),
        "writebacks": writebacks})
    ids: dict[tuple[int, str | None], int] = {}
    outbox = []
    for kind, row_id, found_key in found:
        if kind == 3:
            outbox.append(row_id)
        else:
            ids[kind, found_key] = row_id
    for enrollment, steps in enrolled:
        values = enrollment.__dict__
        enrollment_id = values["id"] = ids[
            1, f"{values['journey']}|{values['resource_type']}|{values['resource_id']}"]
        for step in steps:
            step.__dict__.update(id=ids[2, step.__dict__["uid"]], enrollment_id=enrollment_id)
    return outbox


_ENROLLMENT_COLUMNS = ("journey", "journey_version", "patient", "resource_type", "resource_id",
                       "anchor_at")


@dataclass
class _Pending:
    """A journey's decision to enroll a change, waiting for its plan."""

    change: int
    slot: int
    journey: LoadedJourney
    decision: Decision
    patient: str


def _decisions(
    journeys: JourneySet, changes: list[ResourceChange], now: datetime,
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




def plan_first_sights(
    session: Session, changes: list[ResourceChange], now: datetime, planning: Planning,
    system: str,
) -> tuple[list[list[JourneyOutcome]], list[int]]:
    """Each change's journey outcomes, in the order `apply_journeys` gives them, and the ids of
    the new CommunicationRequests' outbox rows (`system`: our identifier system)."""
    assert planning.journeys is not None
    outcomes, pending = _decisions(planning.journeys, changes, now)
    if not pending:
        return [[o for o in mine if o is not None] for mine in outcomes], []
    documents, sends = _zones_and_sends(session, {p.patient for p in pending}, now, planning)
    configure_mappers()  # `_detached` objects skip the constructor that would have done it
    enrolled: Enrolled = []
    step_rows: list[dict[str, Any]] = []
    for item in pending:  # in change order, then journey order: as one at a time
        change = changes[item.change]
        zone = patient_timezone(documents.get(item.patient)) or planning.zone_for(item.patient)
        plans = plan_steps(item.journey, item.decision.anchor_at or now, now, zone,
                           sends[item.patient], planning.policy)
        rows = [{"step_id": planned.step.id, "attempts": 0, "queued_at": None,
                 **_placement(planned, now)} for planned in plans]
        # The patient's next journey sees these steps, as it would once they are written.
        sends[item.patient] += _as_planned_sends(item.journey, rows, now, planning)
        enrollment = _loaded(_new_enrollment, {
            "journey": item.journey.name, "journey_version": item.journey.version,
            "patient": item.patient, "resource_type": change.resource_type,
            "resource_id": change.resource_id, "cycle": "",
            "anchor_at": item.decision.anchor_at, "state": "active", "created_at": now,
            "updated_at": now})
        steps = []
        for row in rows:
            uid = str(uuid.uuid4())
            steps.append(_loaded(_new_step, {"uid": uid, "excluded_channels": "", **row}))
            step_rows.append({"uid": uid, "journey": item.journey.name,
                              "resource_type": change.resource_type,
                              "resource_id": change.resource_id, "step_id": row["step_id"],
                              "due_at": row["due_at"], "state": row["state"],
                              "reason": row["reason"], "queued_at": row["queued_at"]})
        enrolled.append((enrollment, steps))
        outcomes[item.change][item.slot] = JourneyOutcome(
            item.journey.name, "enroll", item.decision.reason, steps)
    requests = _write(session, enrolled, step_rows,
                      new_request_rows(system, planning.journeys, enrolled, now), now)
    return [[o for o in mine if o is not None] for mine in outcomes], requests
