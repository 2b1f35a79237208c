"""Scheduling options and queries, read from Schedule, Slot and Appointment resources (no I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.client import RESOURCE_ID, reference_problem
from connector.errors import InvalidResource
from connector.polling import fhir_instant

log = logging.getLogger(__name__)

ServiceTypes = tuple[tuple[str, str], ...]
Admits = Callable[[datetime, datetime], bool]

# Appointment statuses an offer may move into a slot: anything else (cancelled, fulfilled,
# noshow, arrived, checked-in, entered-in-error) was decided by someone, and we leave it so.
MOVABLE_STATUSES = frozenset({"booked", "pending", "proposed", "waitlist"})
PRACTITIONER_TYPES = ("Practitioner", "PractitionerRole")
# Bounds on what we read from one resource: an EHR answer is data, not a loop count.
MAX_PARTICIPANTS = 50
MAX_SERVICE_TYPES = 10
MAX_INSTANT_CHARS = 40


@dataclass(frozen=True)
class SlotOption:
    """One time we may offer: a free Slot, or a time an IHE `$find` proposed."""

    start: datetime          # aware, UTC
    end: datetime
    slot: str | None         # "Slot/<id>"; None when the EHR offered a time without a Slot
    slot_version: str | None  # the Slot's meta.versionId when read
    schedule: str | None     # "Schedule/<id>"
    actors: tuple[str, ...]  # the schedule's actors (Practitioner/..., Location/...)
    service_type: ServiceTypes = ()
    proposal: str | None = None  # "Appointment/<id>" an IHE $find proposed, for $hold/$book

    @property
    def key(self) -> str:
        """What identifies this option across searches (for `SlotQuery.exclude`): the Slot, or,
        for a slotless proposal whose id is only valid for one `$find`, its time."""
        return self.slot or f"{fhir_instant(self.start)}/{fhir_instant(self.end)}"


@dataclass(frozen=True)
class SlotQuery:
    practitioner: str | None  # "Practitioner/<id>" or "PractitionerRole/<id>"
    location: str | None      # "Location/<id>"
    service_type: ServiceTypes
    earliest: datetime
    latest: datetime
    admits: Admits | None = None  # the patient's availability
    limit: int = 3
    exclude: frozenset[str] = field(default_factory=frozenset)  # option keys refused/offered

    @property
    def anchored(self) -> bool:
        """Whether the query names a clinician or a place: without either, "the same" clinic is
        unknown, and we offer nothing rather than any slot in the hospital."""
        return self.practitioner is not None or self.location is not None

    def accepts(self, option: SlotOption) -> bool:
        """Inside the window, not excluded, and inside the patient's availability."""
        if not (self.earliest <= option.start < self.latest and option.end > option.start):
            return False
        if option.key in self.exclude:
            return False
        return self.admits is None or self.admits(option.start, option.end)


def parse_instant(value: object) -> datetime | None:
    """An R4 instant/dateTime with a zone, in UTC; None for anything else (a date alone, no zone,
    not a string, too long)."""
    if not isinstance(value, str) or len(value) > MAX_INSTANT_CHARS:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def relative_reference(value: object, types: Iterable[str]) -> str | None:
    """`Type/id` when `value` is a relative reference to one of `types` with a valid id; None for
    absolute URLs (another server's resource), contained (`#x`) or malformed references."""
    if not isinstance(value, str):
        return None
    rtype, _, rid = value.partition("/")
    if rtype not in types or reference_problem(rtype, rid) is not None:
        return None
    return value


def split_reference(value: str, rtype: str) -> str:
    """The id of a `rtype/id` reference, checked against FHIR's grammar before any request
    (InvalidResource otherwise)."""
    if relative_reference(value, (rtype,)) is None:
        raise InvalidResource(f"not a {rtype} reference: {str(value)[:80]!r}")
    return value.partition("/")[2]


def version_of(resource: dict[str, Any]) -> str | None:
    """meta.versionId when it is a FHIR id (it goes into an If-Match header)."""
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and RESOURCE_ID.fullmatch(version) else None


def service_types(resource: dict[str, Any]) -> ServiceTypes:
    """(system, code) of each `serviceType` coding that has both."""
    found: list[tuple[str, str]] = []
    concepts = resource.get("serviceType")
    for concept in concepts if isinstance(concepts, list) else []:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            system = coding.get("system") if isinstance(coding, dict) else None
            code = coding.get("code") if isinstance(coding, dict) else None
            if isinstance(system, str) and isinstance(code, str) and system and code:
                found.append((system, code))
    return tuple(dict.fromkeys(found))[:MAX_SERVICE_TYPES]


def service_matches(wanted: ServiceTypes, offered: ServiceTypes) -> bool:
    """A slot that names no service type takes any; one that names some must share one."""
    return not wanted or not offered or bool(set(wanted) & set(offered))


def _reference_values(items: object) -> list[object]:
    """`reference` of each Reference in a list (None where an item is not one)."""
    values = items[:MAX_PARTICIPANTS] if isinstance(items, list) else []
    return [item.get("reference") if isinstance(item, dict) else None for item in values]


def participant_actors(appointment: dict[str, Any], types: Iterable[str]) -> list[str]:
    """References of the Appointment's participants of these types, in order, except those who
    declined."""
    wanted = tuple(types)
    actors = []
    participants = appointment.get("participant")
    for participant in participants[:MAX_PARTICIPANTS] if isinstance(participants, list) else []:
        if not isinstance(participant, dict) or participant.get("status") == "declined":
            continue
        actor = participant.get("actor")
        ref = relative_reference(actor.get("reference") if isinstance(actor, dict) else None,
                                 wanted)
        if ref is not None:
            actors.append(ref)
    return actors


def schedule_actors(schedule: dict[str, Any]) -> tuple[str, ...]:
    refs = (relative_reference(r, ("Practitioner", "PractitionerRole", "Location",
                                   "HealthcareService", "Device", "RelatedPerson"))
            for r in _reference_values(schedule.get("actor")))
    return tuple(r for r in refs if r is not None)


def query_for(
    appointment: dict[str, Any], *, earliest: datetime, latest: datetime,
    admits: Admits | None = None, limit: int = 3,
) -> SlotQuery:
    """Options like this appointment: the same practitioner (or practitioner role), location and
    service type. A part the appointment does not name is not constrained."""
    practitioners = [a for t in PRACTITIONER_TYPES for a in participant_actors(appointment, (t,))]
    locations = participant_actors(appointment, ("Location",))
    return SlotQuery(
        practitioner=practitioners[0] if practitioners else None,
        location=locations[0] if locations else None,
        service_type=service_types(appointment),
        earliest=earliest.astimezone(UTC), latest=latest.astimezone(UTC),
        admits=admits, limit=limit,
    )


def requested_admits(appointment: dict[str, Any]) -> Admits | None:
    """The waiting patient's `requestedPeriod`s as an availability test (a slot must lie inside
    one of them); None when the appointment states none."""
    periods = []
    requested = appointment.get("requestedPeriod")
    for period in requested[:MAX_PARTICIPANTS] if isinstance(requested, list) else []:
        if not isinstance(period, dict):
            continue
        start, end = parse_instant(period.get("start")), parse_instant(period.get("end"))
        if start is not None or end is not None:
            periods.append((start, end))
    if not periods:
        return None

    def admits(start: datetime, end: datetime) -> bool:
        return any((lo is None or lo <= start) and (hi is None or end <= hi) for lo, hi in periods)

    return admits


def moved_into(appointment: dict[str, Any], option: SlotOption) -> dict[str, Any]:
    """The Appointment booked into the option: its time and Slot, status booked, the patient
    accepted, and the schedule's actors added as participants when the appointment lacks them
    (a waitlist entry may name nobody but the patient)."""
    updated = {k: v for k, v in appointment.items() if k not in ("slot", "minutesDuration")}
    updated.update(status="booked", start=fhir_instant(option.start), end=fhir_instant(option.end))
    if option.slot is not None:
        updated["slot"] = [{"reference": option.slot}]
    listed = appointment.get("participant")
    listed = listed if isinstance(listed, list) else []
    participants = [dict(p) for p in listed if isinstance(p, dict)]
    for participant in participants:
        actor = participant.get("actor")
        reference = str(actor.get("reference", "")) if isinstance(actor, dict) else ""
        # The patient chose the time; the schedule's own actors offered it as free.
        if reference.startswith("Patient/") or reference in option.actors:
            participant["status"] = "accepted"
    present = {p.get("actor", {}).get("reference") for p in participants
               if isinstance(p.get("actor"), dict)}
    participants += [{"actor": {"reference": actor}, "required": "required", "status": "accepted"}
                     for actor in option.actors if actor not in present]
    updated["participant"] = participants
    return updated


def slot_references(appointment: dict[str, Any]) -> list[str]:
    """The Slots an Appointment holds (relative, valid references only)."""
    refs = (relative_reference(r, ("Slot",)) for r in _reference_values(appointment.get("slot")))
    return [r for r in refs if r is not None]


def appointment_like(resource: dict[str, Any]) -> dict[str, Any]:
    """An Encounter's practitioners, locations and service type in an Appointment's shape, so
    times like it can be found (a follow-up booked after a visit); an Appointment as it is."""
    if resource.get("resourceType") != "Encounter":
        return resource
    participants = []
    listed = resource.get("participant")
    for participant in listed[:MAX_PARTICIPANTS] if isinstance(listed, list) else []:
        individual = participant.get("individual") if isinstance(participant, dict) else None
        if isinstance(individual, dict):
            participants.append({"actor": individual})
    places = resource.get("location")
    for place in places[:MAX_PARTICIPANTS] if isinstance(places, list) else []:
        location = place.get("location") if isinstance(place, dict) else None
        if isinstance(location, dict):
            participants.append({"actor": location})
    service = resource.get("serviceType")
    return {"resourceType": "Appointment", "participant": participants,
            **({"serviceType": [service]} if isinstance(service, dict) else {})}


def new_appointment(patient: str, option: SlotOption,
                    identifier: tuple[str, str]) -> dict[str, Any]:
    """A booked Appointment for the patient in the option, with the schedule's actors and service
    type; `identifier` (system, value) makes creating it idempotent."""
    system, value = identifier
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "status": "proposed",
        "identifier": [{"system": system, "value": value}],
        "participant": [{"actor": {"reference": patient}, "required": "required",
                         "status": "needs-action"}],
    }
    if option.service_type:
        resource["serviceType"] = [{"coding": [{"system": s, "code": c}]}
                                   for s, c in option.service_type]
    return moved_into(resource, option)
