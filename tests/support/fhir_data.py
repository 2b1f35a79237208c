"""Valid R4 resources for tests, shaped like the demo fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def patient(pid: str | None = None, *, email: str | None = "pat@example.org",
            mobile: str | None = None, given: str = "Pat", language: str | None = None,
            ) -> dict[str, Any]:
    telecom = []
    if email:
        telecom.append({"system": "email", "value": email, "use": "home"})
    if mobile:
        telecom.append({"system": "phone", "value": mobile, "use": "mobile"})
    resource: dict[str, Any] = {
        "resourceType": "Patient", "active": True,
        "name": [{"use": "official", "family": "Example", "given": [given]}],
        "telecom": telecom,
    }
    if pid:
        resource["id"] = pid
    if language:
        resource["communication"] = [{"language": {"coding": [
            {"system": "urn:ietf:bcp:47", "code": language}]}, "preferred": True}]
    return resource


def appointment(patient_ref: str, start: datetime, *, status: str = "booked",
                aid: str | None = None, version: str | None = None,
                updated: datetime | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "status": status,
        "start": instant(start), "end": instant(start + timedelta(minutes=30)),
        "participant": [
            {"actor": {"reference": patient_ref}, "required": "required", "status": "accepted"},
            {"actor": {"reference": "Location/main", "display": "Main Street Clinic"},
             "required": "required", "status": "accepted"},
        ],
    }
    if aid:
        resource["id"] = aid
    if version or updated:
        resource["meta"] = {"versionId": version or "1",
                            "lastUpdated": instant(updated or datetime.now(UTC))}
    return resource


# -- scheduling: Schedule, Slot, and Appointments that sit in Slots or wait for one --------------

SERVICE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/service-type"


def service_type(code: str, system: str = SERVICE_TYPE_SYSTEM) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def schedule(*actors: str, service_types: tuple[str, ...] = (), active: bool = True,
             ) -> dict[str, Any]:
    """A Schedule of these actors (`Practitioner/x`, `Location/y`)."""
    resource: dict[str, Any] = {"resourceType": "Schedule", "active": active,
                                "actor": [{"reference": actor} for actor in actors]}
    if service_types:
        resource["serviceType"] = [service_type(code) for code in service_types]
    return resource


def slot(schedule_ref: str, start: datetime, *, minutes: int = 30, status: str = "free",
         service_types: tuple[str, ...] = ()) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Slot", "schedule": {"reference": schedule_ref}, "status": status,
        "start": instant(start), "end": instant(start + timedelta(minutes=minutes)),
    }
    if service_types:
        resource["serviceType"] = [service_type(code) for code in service_types]
    return resource


def _participants(patient_ref: str, practitioner: str | None, location: str | None,
                  ) -> list[dict[str, Any]]:
    return [{"actor": {"reference": actor}, "required": "required", "status": "accepted"}
            for actor in (patient_ref, practitioner, location) if actor is not None]


def booked_appointment(patient_ref: str, booked_slot: dict[str, Any], *,
                       practitioner: str | None, location: str | None,
                       service_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """A booked Appointment in a (stored) Slot, with that Slot's time."""
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked",
        "start": booked_slot["start"], "end": booked_slot["end"],
        "slot": [{"reference": f"Slot/{booked_slot['id']}"}],
        "participant": _participants(patient_ref, practitioner, location),
    }
    if service_types:
        resource["serviceType"] = [service_type(code) for code in service_types]
    return resource


def waitlist_appointment(patient_ref: str, requested: list[tuple[datetime, datetime]], *,
                         practitioner: str | None = None, location: str | None = None,
                         service_types: tuple[str, ...] = (),
                         created: datetime | None = None) -> dict[str, Any]:
    """A waiting patient (R4: status `waitlist`, `requestedPeriod` = when they can come)."""
    participants = _participants(patient_ref, practitioner, location)
    for participant in participants[1:]:
        participant["status"] = "needs-action"
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "status": "waitlist",
        "requestedPeriod": [{"start": instant(lo), "end": instant(hi)} for lo, hi in requested],
        "participant": participants,
    }
    if service_types:
        resource["serviceType"] = [service_type(code) for code in service_types]
    if created is not None:
        resource["created"] = instant(created)
    return resource
