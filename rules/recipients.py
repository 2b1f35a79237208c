"""Who a resource is about, and how that patient can be reached on each channel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rules.changes import parse_instant

# Patient.telecom.system values that reach a patient on each of our channels.
_SYSTEMS = {"email": ("email",), "sms": ("sms", "phone"), "console": ("email", "sms", "phone")}


def patient_reference(resource: dict[str, Any]) -> str | None:
    """Appointment.participant.actor or Encounter.subject, when it is a Patient (a Patient is
    its own)."""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource['id']}" if resource.get("id") else None
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


# The FHIR extension for an IANA time zone (core extensions; `tz-code` is its R4-era name).
TIMEZONE_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/timezone",
    "http://hl7.org/fhir/StructureDefinition/tz-code",
)


def _zone_in(extensions: Any) -> ZoneInfo | None:
    for ext in extensions if isinstance(extensions, list) else []:
        if isinstance(ext, dict) and ext.get("url") in TIMEZONE_EXTENSIONS:
            try:
                return ZoneInfo(str(ext.get("valueCode")))
            except (ZoneInfoNotFoundError, ValueError):
                continue  # an unknown zone is ignored: the service's default applies
    return None


def patient_timezone(patient: dict[str, Any] | None) -> ZoneInfo | None:
    """The patient's time zone from the timezone extension on the Patient, or on its current
    home address; None when the record does not say (the caller falls back to
    OUTREACH_TIMEZONE)."""
    if not patient:
        return None
    zone = _zone_in(patient.get("extension"))
    if zone is not None:
        return zone
    addresses = sorted(patient.get("address", []), key=lambda a: a.get("use") != "home")
    for address in addresses:
        if address.get("use") != "old" and (zone := _zone_in(address.get("extension"))):
            return zone
    return None


# Relationships that make a contact someone who looks after the patient: HL7 v3 RoleCode
# (RelatedPerson.relationship, Patient.contact.relationship) and v2-0131 "N" (next of kin) is
# deliberately not among them (a next of kin is not necessarily a caregiver).
CAREGIVER_CODES = frozenset({
    "GUARD", "PRN", "MTH", "FTH", "PRNFOST", "STPPRN", "HPOWATT", "POWATT", "DPOWATT",
    "SPOWATT", "CAREGIVER", "SPS", "HUSB", "WIFE", "DOMPART",
})


@dataclass(frozen=True, slots=True)
class Caregiver:
    """Who receives a journey's messages instead of the patient (`recipient: caregiver`)."""

    name: str
    telecom: list[dict[str, Any]]
    language: str | None
    source: str  # "Patient.contact[0]" or "RelatedPerson/id"

    def contact_for(self, channel: str, now: datetime) -> str | None:
        return contact_for({"telecom": self.telecom}, channel, now)


def _is_caregiver(relationships: Any) -> bool:
    for concept in relationships if isinstance(relationships, list) else []:
        for coding in (concept or {}).get("coding", []):
            if coding.get("code") in CAREGIVER_CODES:
                return True
    return False


def _given(name: Any) -> str:
    given = (name or {}).get("given") or [] if isinstance(name, dict) else []
    return str(given[0]) if given else ""


def caregivers(
    patient: dict[str, Any], related: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> list[Caregiver]:
    """The patient's caregivers, in order: active RelatedPersons first (when the caller read
    them), then Patient.contact entries, each only if its relationship says caregiver and its
    period (if any) covers `now`."""
    found = []
    for person in related or []:
        if person.get("active") is False or not _is_caregiver(person.get("relationship")):
            continue
        if now is not None and not _in_period(person, now):
            continue
        names = person.get("name") or [{}]
        found.append(Caregiver(_given(names[0]), person.get("telecom", []),
                               preferred_language(person), f"RelatedPerson/{person.get('id')}"))
    for index, contact in enumerate(patient.get("contact", [])):
        if not _is_caregiver(contact.get("relationship")):
            continue
        if now is not None and not _in_period(contact, now):
            continue
        found.append(Caregiver(_given(contact.get("name")), contact.get("telecom", []), None,
                               f"Patient.contact[{index}]"))
    return found


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    channel: str
    to_caregiver: bool
    first_name: str
    language: str | None


def choose_recipient(
    mode: str, patient: dict[str, Any], channels: Sequence[str], now: datetime,
    related: list[dict[str, Any]] | None = None,
) -> Recipient | None:
    """The first listed channel on which the journey's recipient can be reached.

    `mode` is a step's or journey's `recipient`: `patient`, `caregiver` (only the caregiver;
    None when there is none) or `caregiver-or-patient`."""
    if mode in ("caregiver", "caregiver-or-patient"):
        for carer in caregivers(patient, related, now):
            for channel in channels:
                address = carer.contact_for(channel, now)
                if address:
                    language = carer.language or preferred_language(patient)
                    return Recipient(address, channel, True, carer.name, language)
        if mode == "caregiver":
            return None
    for channel in channels:
        address = contact_for(patient, channel, now)
        if address:
            return Recipient(address, channel, False, first_name(patient),
                             preferred_language(patient))
    return None
