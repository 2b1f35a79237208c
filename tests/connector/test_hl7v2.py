"""HL7 v2 SIU/ADT → FHIR resources: what journeys see, and the ACKs a sender gets back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import hl7
import pytest

from connector.client import reference_problem
from connector.hl7v2 import Hl7Rejected, Mapped, ack, map_message, parse
from tests.support.hl7_messages import PID, adt, msh, siu

SENT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)


def _map(text: str, zone: Any = UTC) -> Mapped:
    return map_message(parse(text.encode()), zone)


def _rejected(text: str | bytes) -> Hl7Rejected:
    with pytest.raises(Hl7Rejected) as caught:
        map_message(parse(text if isinstance(text, bytes) else text.encode()))
    return caught.value


def test_a_booking_becomes_the_patient_then_a_booked_appointment() -> None:
    patient, appt = _map(siu("S12", "MSG001", SENT, START)).resources
    assert patient["resourceType"] == "Patient" and appt["resourceType"] == "Appointment"
    assert appt["status"] == "booked"
    assert (appt["start"], appt["end"]) == ("2026-03-09T09:00:00Z", "2026-03-09T09:30:00Z")
    actors = [p["actor"] for p in appt["participant"]]
    assert actors[0] == {"reference": f"Patient/{patient['id']}"}
    assert actors[1]["display"] == "Main Street Clinic"
    assert actors[1]["reference"].startswith("Location/")
    assert actors[2]["reference"].startswith("Practitioner/")
    for resource in (patient, appt):
        assert resource["meta"] == {"versionId": "MSG001", "lastUpdated": "2026-03-02T12:00:00Z"}
        assert reference_problem(resource["resourceType"], resource["id"]) is None


def test_the_patient_carries_contact_points_language_and_birth_date() -> None:
    patient = _map(siu("S12", "MSG001", SENT, START)).resources[0]
    assert patient["telecom"] == [
        {"system": "phone", "value": "+15555550123", "use": "mobile"},
        {"system": "email", "value": "jane@example.org"},
    ]
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es"
    assert patient["birthDate"] == "1980-02-14" and patient["gender"] == "female"
    assert patient["name"] == [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}]
    # The MR identifier is the key, not the first repetition's SSN.
    assert patient["identifier"][0]["value"] == "MRN123"


def test_ids_are_stable_across_messages_and_distinct_per_appointment() -> None:
    first = _map(siu("S12", "MSG001", SENT, START)).resources
    moved = _map(siu("S13", "MSG002", SENT + timedelta(hours=1), START + timedelta(days=1)))
    other = _map(siu("S12", "MSG003", SENT, START, appointment_id="A2000")).resources
    assert [r["id"] for r in first] == [r["id"] for r in moved.resources]
    assert moved.resources[1]["start"] == "2026-03-10T09:00:00Z"
    assert other[1]["id"] != first[1]["id"] and other[0]["id"] == first[0]["id"]


@pytest.mark.parametrize(("event", "status"), [
    ("S15", "cancelled"), ("S17", "cancelled"), ("S26", "noshow"), ("S14", "booked")])
def test_trigger_events_set_the_appointment_status(event: str, status: str) -> None:
    assert _map(siu(event, "M9", SENT, START)).resources[1]["status"] == status


def test_filler_status_is_used_for_booking_events() -> None:
    appt = _map(siu("S12", "M9", SENT, START, filler_status="Pending")).resources[1]
    assert appt["status"] == "pending"


def test_a_time_without_offset_is_the_facility_zone() -> None:
    text = siu("S12", "M9", SENT, START).replace("+0000", "")
    appt = _map(text, ZoneInfo("America/Chicago")).resources[1]
    assert appt["start"] == "2026-03-09T14:00:00Z"  # 09:00 CDT


def test_a_control_id_that_is_not_a_fhir_id_is_hashed_into_one() -> None:
    patient = _map(siu("S12", "batch 7/ü", SENT, START)).resources[0]
    version = patient["meta"]["versionId"]
    assert version.startswith("h-") and reference_problem("Patient", version) is None


def test_registration_is_a_patient_and_discharge_a_finished_encounter() -> None:
    (registered,) = _map(adt("A04", "ADT1", SENT)).resources
    assert registered["resourceType"] == "Patient"
    patient, visit = _map(adt("A03", "ADT2", SENT, discharged=SENT - timedelta(hours=1))).resources
    assert visit["resourceType"] == "Encounter" and visit["status"] == "finished"
    assert visit["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert visit["period"]["end"] == "2026-03-02T11:00:00Z"
    assert visit["class"]["code"] == "AMB"


@pytest.mark.parametrize(("text", "code", "reason"), [
    (b"hello, this is not HL7", "AR", "not an HL7 v2 message"),
    (b"\x00\x01\x02", "AR", "NUL"),
    (b"MSH", "AR", "not an HL7 v2 message"),
    (b"MSH|^~\\&|" + b"x" * (1024 * 1024), "AR", "larger than"),
])
def test_what_is_not_hl7_is_refused(text: bytes, code: str, reason: str) -> None:
    refused = _rejected(text)
    assert refused.ack_code == code and reason in refused.reason


def test_an_unknown_trigger_event_is_refused_by_name() -> None:
    refused = _rejected(msh("A08", "X1", SENT, "ADT") + "\r" + PID)
    assert (refused.ack_code, refused.error_code) == ("AR", "201")
    assert "ADT^A08" in refused.reason
    assert _rejected(msh("O01", "X2", SENT, "ORM")).error_code == "200"


@pytest.mark.parametrize(("text", "reason"), [
    (siu("S12", "M1", SENT, START, pid=None), "PID segment is missing"),
    (siu("S12", "M1", SENT, START, pid="PID|1||"), "PID-3"),
    (siu("S12", "M1", SENT, START).replace("|M1|", "||"), "MSH-10"),
    (siu("S12", "M1", SENT, START).replace("PA1000^EPIC|A1000^SCHED", "|"), "SCH-1 and SCH-2"),
    (adt("A03", "M1", SENT, visit=None), "PV1-19"),
])
def test_a_segment_missing_required_fields_is_an_application_error(text: str, reason: str) -> None:
    refused = _rejected(text)
    assert refused.ack_code == "AE" and reason in refused.reason


def test_an_appointment_without_a_start_is_refused_unless_it_is_cancelled() -> None:
    no_start = "\r".join(s for s in siu("S12", "M1", SENT, START).split("\r")
                         if s[:3] not in ("AIS", "AIL", "AIP"))
    no_start = no_start.replace("^^30^20260309090000+0000", "")
    assert "no appointment start" in _rejected(no_start).reason
    cancelled = _map(no_start.replace("SIU^S12^SIU_S12", "SIU^S15^SIU_S15")).resources[1]
    assert cancelled["status"] == "cancelled" and "start" not in cancelled


def test_acks_echo_the_control_id_and_escape_the_reason() -> None:
    head = _map(siu("S12", "MSG001", SENT, START)).header
    accepted = hl7.parse(ack(head, "AA", now=SENT).decode())
    assert str(accepted.segment("MSA")) == "MSA|AA|MSG001|"
    assert accepted["MSH.F9.R1.C2"] == "S12" and accepted["MSH.F5"] == "SCHED"
    refused = hl7.parse(ack(head, "AE", "PID-3 | missing ^ here", "101", now=SENT).decode())
    assert refused["MSA.F1"] == "AE" and refused["MSA.F2"] == "MSG001"
    assert refused.unescape(str(refused.segment("MSA")[3])) == "PID-3 | missing ^ here"
    assert refused["ERR.F3.R1.C1"] == "101"
    blind = hl7.parse(ack(None, "AR", "not HL7", "100").decode())
    assert blind["MSA.F1"] == "AR" and blind["MSA.F2"] == ""
