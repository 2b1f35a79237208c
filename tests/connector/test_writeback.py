"""The Communication written back to the EHR for each message we sent."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.resources import validate_resource
from connector.writeback import SentMessage, build_communication, identifier_query

SYSTEM = "https://outreach.example.org/fhir/message-id"
FHIR_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def sent(channel: str = "sms", **overrides: Any) -> SentMessage:
    fields: dict[str, Any] = {
        "identifier_system": SYSTEM,
        "identifier_value": "enr-7/reminder-24h",
        "patient": "Patient/ana",
        "about": "Appointment/appt-ana",
        "channel": channel,
        "category": "reminder",
        "sent": datetime(2026, 3, 8, 10, 0, tzinfo=ZoneInfo("America/New_York")),
        "text": "Recordatorio: Ana, su cita es el lunes 9 de marzo a las 10:00. Responda STOP.",
    }
    return SentMessage(**{**fields, **overrides})


@pytest.mark.parametrize("channel", ["sms", "email"])
def test_communication_is_valid_r4(channel: str) -> None:
    communication = build_communication(sent(channel, subject="Recordatorio"))

    assert validate_resource(communication, "Communication") is communication


def test_sms_communication_records_what_was_sent_to_whom() -> None:
    communication = build_communication(sent("sms"))

    assert communication["status"] == "completed"
    assert communication["subject"] == {"reference": "Patient/ana"}
    assert communication["recipient"] == [{"reference": "Patient/ana"}]
    assert communication["about"] == [{"reference": "Appointment/appt-ana"}]
    assert communication["identifier"] == [{"system": SYSTEM, "value": "enr-7/reminder-24h"}]
    assert communication["payload"] == [{"contentString": sent().text}]
    (category,) = communication["category"]
    assert category["coding"] == [{
        "system": "http://terminology.hl7.org/CodeSystem/communication-category",
        "code": "reminder",
    }]
    (medium,) = communication["medium"]
    assert medium["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
    )
    assert medium["coding"][0]["code"] == "WRITTEN"
    assert medium["text"] == "SMS"
    assert "topic" not in communication


def test_sent_is_a_fhir_instant_in_utc() -> None:
    communication = build_communication(sent())

    assert FHIR_INSTANT.match(communication["sent"])
    assert communication["sent"] == "2026-03-08T14:00:00.000Z"  # 10:00 EDT


def test_email_communication_uses_emailwrit_and_keeps_the_subject() -> None:
    communication = build_communication(sent("email", subject="Reminder: your appointment"))

    assert communication["medium"][0]["coding"][0]["code"] == "EMAILWRIT"
    assert communication["topic"] == {"text": "Reminder: your appointment"}


def test_a_related_person_can_be_the_recipient() -> None:
    communication = build_communication(sent(recipient="RelatedPerson/ana-mother"))

    assert communication["subject"] == {"reference": "Patient/ana"}
    assert communication["recipient"] == [{"reference": "RelatedPerson/ana-mother"}]


def test_identifier_query_finds_this_communication() -> None:
    message = sent()

    query = identifier_query(message.identifier_system, message.identifier_value)

    assert query == f"identifier={SYSTEM}|enr-7/reminder-24h"
