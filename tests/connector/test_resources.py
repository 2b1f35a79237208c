"""Validation of incoming FHIR R4 JSON: what we reject, and the OperationOutcome we say it with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.errors import FhirError, InvalidResource
from connector.resources import parse_json, validate_resource

DEMO = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "demo"
APPOINTMENT: dict[str, Any] = json.loads(
    (DEMO / "10-appointment-ana-v1-booked.json").read_text(encoding="utf-8")
)
ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "subject": {"reference": "Patient/ana"},
    "period": {"start": "2026-03-09T14:00:00Z", "end": "2026-03-09T14:30:00Z"},
}


def expressions(exc: InvalidResource) -> list[str]:
    assert exc.outcome["resourceType"] == "OperationOutcome"
    return [e for issue in exc.outcome["issue"] for e in issue.get("expression", [])]


@pytest.mark.parametrize("file", sorted(DEMO.glob("*.json")), ids=lambda f: f.name)
def test_demo_fixtures_are_valid_r4(file: Path) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))

    assert validate_resource(data, data["resourceType"]) == data


def test_valid_encounter_passes() -> None:
    assert validate_resource(ENCOUNTER, "Encounter") is ENCOUNTER


def test_unknown_element_is_named_in_the_outcome() -> None:
    with pytest.raises(InvalidResource) as info:
        validate_resource({**APPOINTMENT, "colour": "red"}, "Appointment")

    assert info.value.status == 400
    assert expressions(info.value) == ["Appointment.colour"]
    assert info.value.outcome["issue"][0]["severity"] == "error"


def test_nested_unknown_element_is_named_in_the_outcome() -> None:
    participant = {**APPOINTMENT["participant"][0], "mood": "happy"}

    with pytest.raises(InvalidResource) as info:
        validate_resource({**APPOINTMENT, "participant": [participant]})

    (expression,) = expressions(info.value)
    assert expression.startswith("Appointment.participant") and expression.endswith("mood")


def test_resource_type_not_matching_the_url_is_rejected() -> None:
    with pytest.raises(InvalidResource, match=r"Appointment.*Encounter"):
        validate_resource(APPOINTMENT, "Encounter")


@pytest.mark.parametrize(
    "data", [{"id": "x"}, [], "Appointment", {"resourceType": 7}], ids=repr
)
def test_something_that_is_not_a_resource_is_rejected(data: Any) -> None:
    with pytest.raises(InvalidResource, match="no resourceType"):
        validate_resource(data)


def test_unknown_resource_type_is_rejected() -> None:
    with pytest.raises(InvalidResource, match="unknown resourceType 'Appointmnt'"):
        validate_resource({**APPOINTMENT, "resourceType": "Appointmnt"})


@pytest.mark.parametrize(("resource", "rtype"), [(APPOINTMENT, "Appointment"),
                                                 (ENCOUNTER, "Encounter")])
def test_status_code_outside_r4_is_rejected(resource: dict[str, Any], rtype: str) -> None:
    with pytest.raises(InvalidResource) as info:
        validate_resource({**resource, "status": "bogus"})

    assert expressions(info.value) == [f"{rtype}.status"]
    assert "'bogus'" in str(info.value)


def test_malformed_instant_is_rejected() -> None:
    with pytest.raises(InvalidResource) as info:
        validate_resource({**APPOINTMENT, "start": "next tuesday"})

    assert expressions(info.value) == ["Appointment.start"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\xfa", b'{"resourceType": '])
def test_parse_json_rejects_malformed_bodies(body: bytes) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_json(body)

    assert isinstance(info.value, FhirError)
    assert info.value.outcome["resourceType"] == "OperationOutcome"


def test_parse_json_returns_the_document() -> None:
    assert parse_json(json.dumps(APPOINTMENT).encode()) == APPOINTMENT
