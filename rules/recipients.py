"""Who a resource is about, and how that patient can be reached on each channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rules.changes import parse_instant

# Patient.telecom.system values that reach a patient on each of our channels.
_SYSTEMS = {"email": ("email",), "sms": ("sms", "phone"), "console": ("email", "sms", "phone")}


def patient_reference(resource: dict[str, Any]) -> str | None:
    """Appointment.participant.actor or Encounter.subject, when it is a Patient."""
    if resource.get("resourceType") == "Appointment":
        for participant in resource.get("participant", []):
            ref = (participant.get("actor") or {}).get("reference", "")
            if ref.startswith("Patient/"):
                return str(ref)
        return None
    ref = (resource.get("subject") or {}).get("reference", "")
    return str(ref) if ref.startswith("Patient/") else None


def _in_period(point: dict[str, Any], now: datetime) -> bool:
    period = point.get("period") or {}
    start, end = period.get("start"), period.get("end")
    return not ((start and parse_instant(start) > now) or (end and parse_instant(end) < now))


def contact_for(patient: dict[str, Any], channel: str, now: datetime) -> str | None:
    """The best current contact point for a channel: rank first, then listed order; phones for
    SMS must be mobile (use=mobile) unless the system says sms."""
    systems = _SYSTEMS.get(channel, ())
    candidates = []
    for index, point in enumerate(patient.get("telecom", [])):
        system, value = point.get("system"), point.get("value")
        if system not in systems or not value or point.get("use") == "old":
            continue
        if channel == "sms" and system == "phone" and point.get("use") != "mobile":
            continue
        if not _in_period(point, now):
            continue
        candidates.append((point.get("rank", 1_000_000), index, str(value)))
    return min(candidates)[2] if candidates else None


def first_name(patient: dict[str, Any]) -> str:
    names = patient.get("name", [])
    official = [n for n in names if n.get("use") == "official"] or names
    for name in official:
        given = name.get("given") or []
        if given:
            return str(given[0])
    return ""


def preferred_language(patient: dict[str, Any]) -> str | None:
    comms = patient.get("communication", [])
    ordered = sorted(comms, key=lambda c: not c.get("preferred", False))
    for comm in ordered:
        for coding in (comm.get("language") or {}).get("coding", []):
            if coding.get("code"):
                return str(coding["code"]).split("-")[0].lower()
    return None
