"""Who an Appointment or Encounter is about, and how to reach that patient on each channel."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rules.recipients import contact_for, first_name, patient_reference, preferred_language

DEMO = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "demo"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def demo(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEMO / name).read_text(encoding="utf-8"))
    return data


def patient(*telecom: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p", "telecom": list(telecom), **extra}


def test_demo_patients_are_reached_as_their_records_allow() -> None:
    ana, ben = demo("01-patient-ana.json"), demo("02-patient-ben.json")
    chloe, dan = demo("03-patient-chloe.json"), demo("04-patient-dan.json")

    assert contact_for(ana, "email", NOW) == "ana.garcia@example.org"
    assert contact_for(ana, "sms", NOW) == "+15555550101"
    assert contact_for(ben, "sms", NOW) is None
    assert contact_for(chloe, "email", NOW) is None
    assert contact_for(dan, "sms", NOW) is None  # a home landline cannot take a text


def test_rank_wins_over_listed_order() -> None:
    p = patient(
        {"system": "email", "value": "second@example.org", "rank": 2},
        {"system": "email", "value": "unranked@example.org"},
        {"system": "email", "value": "first@example.org", "rank": 1},
    )

    assert contact_for(p, "email", NOW) == "first@example.org"


def test_listed_order_breaks_ties() -> None:
    p = patient(
        {"system": "email", "value": "a@example.org"},
        {"system": "email", "value": "b@example.org"},
    )

    assert contact_for(p, "email", NOW) == "a@example.org"


def test_old_contact_points_are_skipped() -> None:
    p = patient(
        {"system": "email", "value": "old@example.org", "use": "old", "rank": 1},
        {"system": "email", "value": "new@example.org", "rank": 2},
    )

    assert contact_for(p, "email", NOW) == "new@example.org"


def test_contact_points_whose_period_ended_are_skipped() -> None:
    p = patient(
        {"system": "email", "value": "ended@example.org", "rank": 1,
         "period": {"end": "2026-03-01T00:00:00Z"}},
        {"system": "email", "value": "later@example.org", "rank": 2,
         "period": {"start": "2026-04-01T00:00:00Z"}},
        {"system": "email", "value": "current@example.org", "rank": 3,
         "period": {"start": "2025-01-01", "end": "2027-01-01T00:00:00+01:00"}},
    )

    assert contact_for(p, "email", NOW) == "current@example.org"
    assert contact_for(p, "email", datetime(2026, 2, 1, tzinfo=UTC)) == "ended@example.org"


def test_a_period_ending_in_a_partial_year_is_understood() -> None:
    p = patient(
        {"system": "email", "value": "ended@example.org", "rank": 1, "period": {"end": "2024"}},
        {"system": "email", "value": "current@example.org", "rank": 2},
    )

    assert contact_for(p, "email", NOW) == "current@example.org"


@pytest.mark.parametrize(
    ("point", "reaches"),
    [
        ({"system": "sms", "value": "+15550001"}, True),
        ({"system": "sms", "value": "+15550001", "use": "home"}, True),
        ({"system": "phone", "value": "+15550001", "use": "mobile"}, True),
        ({"system": "phone", "value": "+15550001", "use": "home"}, False),
        ({"system": "phone", "value": "+15550001", "use": "work"}, False),
        ({"system": "phone", "value": "+15550001"}, False),
        ({"system": "email", "value": "x@example.org"}, False),
        ({"system": "sms", "value": ""}, False),
    ],
)
def test_sms_goes_only_to_sms_numbers_or_mobile_phones(
    point: dict[str, Any], reaches: bool
) -> None:
    expected = point["value"] if reaches else None

    assert contact_for(patient(point), "sms", NOW) == expected


def test_email_goes_only_to_email_addresses() -> None:
    p = patient({"system": "phone", "value": "+15550001", "use": "mobile"},
                {"system": "email", "value": "x@example.org"})

    assert contact_for(p, "email", NOW) == "x@example.org"
    assert contact_for(patient({"system": "phone", "value": "+1", "use": "mobile"}),
                       "email", NOW) is None


def test_patient_reference_of_an_appointment() -> None:
    assert patient_reference(demo("10-appointment-ana-v1-booked.json")) == "Patient/ana"
    appointment = {
        "resourceType": "Appointment", "status": "booked",
        "participant": [
            {"actor": {"reference": "Practitioner/dr"}, "status": "accepted"},
            {"type": [{"text": "room"}], "status": "accepted"},
            {"actor": {"reference": "Patient/p2"}, "status": "accepted"},
        ],
    }
    assert patient_reference(appointment) == "Patient/p2"
    no_patient = {**appointment, "participant": appointment["participant"][:2]}
    assert patient_reference(no_patient) is None


def test_patient_reference_of_an_encounter() -> None:
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "subject": {"reference": "Patient/p3"}}

    assert patient_reference(encounter) == "Patient/p3"
    assert patient_reference({**encounter, "subject": {"reference": "Group/g1"}}) is None
    assert patient_reference({"resourceType": "Encounter", "status": "finished"}) is None


def test_first_name_prefers_the_official_name() -> None:
    p = {"resourceType": "Patient", "name": [
        {"use": "usual", "given": ["Bill"]},
        {"use": "official", "family": "Smith", "given": ["William", "Henry"]},
    ]}

    assert first_name(p) == "William"
    assert first_name({"resourceType": "Patient", "name": [{"given": ["Zoë"]}]}) == "Zoë"
    assert first_name({"resourceType": "Patient"}) == ""
    assert first_name(demo("03-patient-chloe.json")) == "Chloé"


def test_preferred_language_picks_the_preferred_communication() -> None:
    def lang(code: str, preferred: bool | None = None) -> dict[str, Any]:
        comm: dict[str, Any] = {"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                         "code": code}]}}
        if preferred is not None:
            comm["preferred"] = preferred
        return comm

    assert preferred_language({"communication": [lang("en"), lang("es-MX", True)]}) == "es"
    assert preferred_language({"communication": [lang("fr", False), lang("de")]}) == "fr"
    assert preferred_language({}) is None
    assert preferred_language(demo("01-patient-ana.json")) == "es"
