"""Build the FHIR Communication that records one message we sent (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.polling import fhir_instant

PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"

# Communication.medium per channel. v3 ParticipationMode has no SMS code: SMS is WRITTEN.
_MEDIUM = {
    "email": ("EMAILWRIT", "email", "Email"),
    "sms": ("WRITTEN", "written", "SMS"),
}


@dataclass(frozen=True, slots=True)
class SentMessage:
    identifier_system: str
    identifier_value: str
    patient: str
    about: str
    channel: str
    category: str
    sent: datetime
    text: str
    subject: str | None = None
    recipient: str | None = None
    based_on: str | None = None  # our identifier value of the CommunicationRequest
    sender: str | None = None  # who wrote it, when a person did ("Practitioner/{id}")
    status: str = "completed"  # not-done: recorded, not sent (status_reason says why)
    status_reason: str | None = None


def request_identifier(step_uid: str) -> str:
    return f"request-{step_uid}"


def _medium(channel: str) -> dict[str, Any]:
    code, display, text = _MEDIUM.get(channel, ("WRITTEN", "written", channel))
    return {"coding": [{"system": PARTICIPATION_MODE, "code": code, "display": display}],
            "text": text}


def identifier_query(system: str, value: str) -> str:
    """The If-None-Exist search that makes creating this Communication idempotent."""
    return f"identifier={system}|{value}"


def build_communication(message: SentMessage) -> dict[str, Any]:
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": message.identifier_system, "value": message.identifier_value}],
        "status": message.status,
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": message.category}]}],
        "medium": [_medium(message.channel)],
        "subject": {"reference": message.patient},
        "about": [{"reference": message.about}],
        "sent": fhir_instant(message.sent),
        "recipient": [{"reference": message.recipient or message.patient}],
        "payload": [{"contentString": message.text}],
    }
    if message.subject:
        communication["topic"] = {"text": message.subject}
    if message.sender:
        communication["sender"] = {"reference": message.sender}
    if message.status_reason:
        communication["statusReason"] = {"text": message.status_reason}
    if message.based_on:
        communication["basedOn"] = [{"identifier": {"system": message.identifier_system,
                                                    "value": message.based_on}}]
    return communication


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """A step as the EHR should see it before (and after) it is sent."""

    identifier_system: str
    step_uid: str
    status: str  # active | completed | revoked
    patient: str
    about: str
    channels: tuple[str, ...]
    category: str
    due: datetime
    authored: datetime
    description: str
    status_reason: str | None = None


def build_communication_request(planned: PlannedMessage) -> dict[str, Any]:
    """CommunicationRequest for a planned step, so upcoming outreach shows in the EHR; revoked
    when cancelled or skipped (with the reason), completed when sent."""
    request: dict[str, Any] = {
        "resourceType": "CommunicationRequest",
        "identifier": [{"system": planned.identifier_system,
                        "value": request_identifier(planned.step_uid)}],
        "status": planned.status,
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": planned.category}]}],
        "priority": "routine",
        "medium": [_medium(channel) for channel in planned.channels],
        "subject": {"reference": planned.patient},
        "about": [{"reference": planned.about}],
        "payload": [{"contentString": planned.description}],
        "occurrenceDateTime": fhir_instant(planned.due),
        "authoredOn": fhir_instant(planned.authored),
    }
    if planned.status_reason:
        request["statusReason"] = {"text": planned.status_reason[:500]}
    return request
