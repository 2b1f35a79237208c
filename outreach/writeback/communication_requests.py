"""Planned steps as FHIR CommunicationRequests: upcoming outreach is visible in the EHR, and
each request follows its step (active → completed when sent, revoked when it will not be)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from connector.polling import fhir_instant
from connector.writeback import PlannedMessage, build_communication_request, request_identifier
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.writeback import outbox
from rules.loader import JourneySet, LoadedJourney

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
) -> str:
    """The outbox rows `queue_requests(..., first=True)` would add for these new enrollments
    (resource type, identifier, resource), as the JSON array a batch's statement reads. Each
    request's text is filled into a template made by `build_communication_request` itself:
    building and encoding every request was a third of a booking's batch CPU."""
    authored = _escaped(fhir_instant(now))[1:-1]
    rows = []
    made: dict[tuple[str, str, str], str | None] = {}  # (journey, step, state) -> template
    for enrollment, steps in enrolled:
        journey = journeys.by_name(enrollment.journey)
        patient = _escaped(enrollment.patient)[1:-1]
        about = _escaped(enrollment.anchor_reference)[1:-1]
        for step in steps:
            key = (enrollment.journey, step.step_id, step.state)
            if key not in made:
                made[key] = _step_template(system, journey, *key)
            template = made[key]
            if template is None:
                planned = _requests(system, journeys, enrollment, [step], now)
                for resource, value in planned:
                    rows.append(json.dumps({"resource_type": resource["resourceType"],
                                            "identifier": f"{system}|{value}",
                                            "resource": resource}))
                continue
            rows.append(template.format(
                uid=_escaped(step.uid)[1:-1], patient=patient, about=about,
                due=_escaped(fhir_instant(step.due_at))[1:-1], authored=authored))
    return "[" + ",".join(rows) + "]"


def sent_request_row(
    system: str, journeys: JourneySet, enrollment: Enrollment, step_uid: str, step_id: str,
    due: datetime, now: datetime,
) -> str:
    """The outbox row (as `new_request_rows` writes one) of a sent step's CommunicationRequest,
    completed: one filled template, for the one-statement record of a send."""
    template = _step_template(system, journeys.by_name(enrollment.journey), enrollment.journey,
                              step_id, StepState.SENT)
    assert template is not None  # only a revoked request has no template
    return template.format(
        uid=_escaped(step_uid)[1:-1], patient=_escaped(enrollment.patient)[1:-1],
        about=_escaped(enrollment.anchor_reference)[1:-1],
        due=_escaped(fhir_instant(due))[1:-1], authored=_escaped(fhir_instant(now))[1:-1])


def _step_template(
    system: str, journey: LoadedJourney | None, name: str, step_id: str, state: str,
) -> str | None:
    """The outbox row template of a step's request in this state; None for a revoked one, which
    carries its reason and is built in full (rare for a new plan)."""
    status = _STATUS.get(StepState(state), "active")
    if status == "revoked":
        return None
    spec = journey.step(step_id) if journey else None
    return _template(system, status, tuple(spec.channel) if spec else ("sms",),
                     spec.category if spec else "reminder", f"{name}: {step_id}")


_escaped = json.encoder.encode_basestring_ascii  # a JSON string, as json.dumps writes it
# Stand-ins for a request's per-step values: text no journey's names or descriptions contain,
# and instants no plan is due at. Found in the template's JSON, they become its slots.
_STAND_INS = {"uid": "\ue000uid\ue000", "patient": "\ue000patient\ue000",
              "about": "\ue000about\ue000"}
_DUE = datetime(1901, 1, 1, 1, 1, 1, tzinfo=UTC)
_AUTHORED = datetime(1902, 2, 2, 2, 2, 2, tzinfo=UTC)


@lru_cache(maxsize=1024)
def _template(
    system: str, status: str, channels: tuple[str, ...], category: str, description: str,
) -> str:
    """An outbox row's JSON as a format string, its slots named as in `_STAND_INS`."""
    resource = build_communication_request(PlannedMessage(
        identifier_system=system, step_uid=_STAND_INS["uid"], status=status,
        patient=_STAND_INS["patient"], about=_STAND_INS["about"], channels=channels,
        category=category, due=_DUE, authored=_AUTHORED, description=description))
    text = json.dumps({"resource_type": resource["resourceType"],
                       "identifier": f"{system}|{request_identifier(_STAND_INS['uid'])}",
                       "resource": resource})
    found = {json.dumps(v)[1:-1]: k for k, v in _STAND_INS.items()}
    found |= {fhir_instant(_DUE): "due", fhir_instant(_AUTHORED): "authored"}
    pieces = re.split("(" + "|".join(re.escape(k) for k in found) + ")", text)
    return "".join(piece.replace("{", "{{").replace("}", "}}") if i % 2 == 0
                   else "{" + found[piece] + "}" for i, piece in enumerate(pieces))


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
