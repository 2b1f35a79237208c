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


def identifier_query(system: str, value: str) -> str:
    """The If-None-Exist search that makes creating this Communication idempotent."""
    return f"identifier={system}|{value}"


def build_communication(message: SentMessage) -> dict[str, Any]:
    code, display, text = _MEDIUM.get(message.channel, ("WRITTEN", "written", message.channel))
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": message.identifier_system, "value": message.identifier_value}],
        "status": "completed",
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": message.category}]}],
        "medium": [{"coding": [{"system": PARTICIPATION_MODE, "code": code, "display": display}],
                    "text": text}],
        "subject": {"reference": message.patient},
        "about": [{"reference": message.about}],
        "sent": fhir_instant(message.sent),
        "recipient": [{"reference": message.recipient or message.patient}],
        "payload": [{"contentString": message.text}],
    }
    if message.subject:
        communication["topic"] = {"text": message.subject}
    return communication
