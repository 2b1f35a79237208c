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
