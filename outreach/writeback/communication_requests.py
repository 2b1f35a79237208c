"""Planned steps as FHIR CommunicationRequests: upcoming outreach is visible in the EHR, and
each request follows its step (active → completed when sent, revoked when it will not be)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from connector.writeback import PlannedMessage, build_communication_request, request_identifier
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.writeback import outbox
from rules.loader import JourneySet

_STATUS = {
    StepState.SCHEDULED: "active", StepState.QUEUED: "active", StepState.SENDING: "active",
    StepState.SENT: "completed", StepState.SKIPPED: "revoked", StepState.CANCELLED: "revoked",
    StepState.FAILED: "revoked",
}


def queue_requests(
    session: Session, system: str, journeys: JourneySet, enrollment: Enrollment,
    steps: Iterable[ScheduledStep], now: datetime, *, first: bool = False,
) -> list[int]:
    """Queue the CommunicationRequest of each step in the outbox; returns the row ids for the
    caller to enqueue after commit. `first` (a new enrollment) creates with If-None-Exist; later
    changes update the request carrying the step's identifier."""
    if session.info.get(outbox.DROP_WRITEBACKS):  # none would be stored: build none
        return []
    return [outbox.put(session, resource, system, value, now,
                       operation="create" if first else "upsert", known_new=first)
            for resource, value in _requests(system, journeys, enrollment, steps, now)]


def new_request_rows(
    system: str, journeys: JourneySet,
    enrolled: Iterable[tuple[Enrollment, Iterable[ScheduledStep]]], now: datetime,
) -> list[dict[str, Any]]:
    """The outbox rows `queue_requests(..., first=True)` would add for these new enrollments
    (resource type, identifier, resource), for a batch that writes them in its own statement."""
    return [{"resource_type": resource["resourceType"], "identifier": f"{system}|{value}",
             "resource": resource}
            for enrollment, steps in enrolled
            for resource, value in _requests(system, journeys, enrollment, steps, now)]


def _requests(
    system: str, journeys: JourneySet, enrollment: Enrollment, steps: Iterable[ScheduledStep],
    now: datetime,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Each step's CommunicationRequest and its identifier value."""
    journey = journeys.by_name(enrollment.journey)
    for step in steps:
        spec = journey.step(step.step_id) if journey else None
        status = _STATUS.get(StepState(step.state), "active")
        planned = PlannedMessage(
            identifier_system=system, step_uid=step.uid, status=status,
            patient=enrollment.patient, about=enrollment.anchor_reference,
            channels=tuple(spec.channel) if spec else ("sms",),
            category=spec.category if spec else "reminder", due=step.due_at, authored=now,
            description=f"{enrollment.journey}: {step.step_id}",
            status_reason=step.reason if status == "revoked" else None,
        )
        yield build_communication_request(planned), request_identifier(step.uid)
