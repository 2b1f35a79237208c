"""FHIR resources that record a patient's reply: the inbound Communication, a Task for staff,
and the Appointment changes a reply asks for (pure builders; no I/O)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.polling import fhir_instant
from connector.writeback import PARTICIPATION_MODE

CANCELLATION_REASON = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"


def _logical(system: str, value: str) -> dict[str, Any]:
    return {"identifier": {"system": system, "value": value}}


@dataclass(frozen=True, slots=True)
class InboundSms:
    identifier_system: str
    message_id: str
    received: datetime
    text: str
    patient: str | None = None
    about: str | None = None
    in_response_to: str | None = None  # our identifier value of the outbound Communication


def build_inbound_communication(reply: InboundSms) -> dict[str, Any]:
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": reply.identifier_system, "value": f"inbound-{reply.message_id}"}],
        "status": "completed",
        "medium": [{"coding": [{"system": PARTICIPATION_MODE, "code": "WRITTEN",
                                "display": "written"}], "text": "SMS"}],
        "received": fhir_instant(reply.received),
        "payload": [{"contentString": reply.text}],
    }
    if reply.patient:
        communication["subject"] = {"reference": reply.patient}
        communication["sender"] = {"reference": reply.patient}
    if reply.about:
        communication["about"] = [{"reference": reply.about}]
    if reply.in_response_to:
        communication["inResponseTo"] = [_logical(reply.identifier_system, reply.in_response_to)]
    return communication


@dataclass(frozen=True, slots=True)
class StaffTask:
    identifier_system: str
    identifier_value: str
    description: str
    authored: datetime
    priority: str = "routine"  # routine | urgent | asap | stat
    patient: str | None = None
    focus: str | None = None
    reply_identifier: str | None = None  # the inbound Communication that prompted it
    owner: str | None = None


def build_task(task: StaffTask) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": task.identifier_system, "value": task.identifier_value}],
        "status": "requested",
        "intent": "order",
        "priority": task.priority,
        "description": task.description,
        "authoredOn": fhir_instant(task.authored),
    }
    if task.patient:
        resource["for"] = {"reference": task.patient}
    if task.focus:
        resource["focus"] = {"reference": task.focus}
    if task.owner:
        resource["owner"] = {"reference": task.owner}
    if task.reply_identifier:
        resource["input"] = [{
            "type": {"text": "patient reply"},
            "valueReference": _logical(task.identifier_system, task.reply_identifier),
        }]
    return resource


@dataclass(frozen=True, slots=True)
class SurveyAnswer:
    identifier_system: str
    message_id: str
    score: int
    low: int
    high: int
    authored: datetime
    patient: str | None = None
    about: str | None = None  # the Encounter (or Appointment) the survey was about


def build_questionnaire_response(answer: SurveyAnswer) -> dict[str, Any]:
    """The score as a QuestionnaireResponse, linked to the Encounter it rates."""
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": answer.identifier_system, "value": f"survey-{answer.message_id}"},
        "status": "completed",
        "authored": fhir_instant(answer.authored),
        "item": [{"linkId": "satisfaction",
                  "text": f"Satisfaction, {answer.low} (worst) to {answer.high} (best)",
                  "answer": [{"valueInteger": answer.score}]}],
    }
    if answer.patient:
        response["subject"] = {"reference": answer.patient}
        response["source"] = {"reference": answer.patient}
    if answer.about and answer.about.startswith("Encounter/"):
        response["encounter"] = {"reference": answer.about}
    return response


def confirmed_by_patient(appointment: dict[str, Any], patient: str) -> dict[str, Any]:
    """The Appointment with the patient's participation status set to `accepted`."""
    updated = copy.deepcopy(appointment)
    for participant in updated.get("participant", []):
        if (participant.get("actor") or {}).get("reference") == patient:
            participant["status"] = "accepted"
    return updated


def cancelled_by_patient(appointment: dict[str, Any]) -> dict[str, Any]:
    updated = copy.deepcopy(appointment)
    updated["status"] = "cancelled"
    updated["cancelationReason"] = {"coding": [{"system": CANCELLATION_REASON, "code": "pat",
                                                "display": "Patient"}]}
    return updated
