"""Finding and booking through the IHE ITI Scheduling operations on Appointment: `$find`
(ITI-115), `$hold` (ITI-116) and `$book` (ITI-117), used where the EHR's CapabilityStatement
advertises them. The EHR then owns the Slots: it holds, books and frees them itself.

Our appointment already exists (booked, or a waitlist entry), so booking is ITI-117's "modify an
existing appointment": `$book` with the Appointment itself (status booked, the new time and
slot, its meta.versionId) and, when we held one, the held proposal's reference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from connector.capabilities import Capabilities
from connector.errors import (
    AppointmentChanged,
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    SlotTaken,
)
from connector.polling import fhir_instant
from connector.slots import (
    MOVABLE_STATUSES,
    SlotOption,
    SlotQuery,
    moved_into,
    parse_instant,
    participant_actors,
    relative_reference,
    service_matches,
    service_types,
    slot_references,
    version_of,
)

log = logging.getLogger(__name__)

PAGE = 50       # proposals asked for per $find (`_count`)
MAX_PAGES = 4   # $find calls per search, each starting where the last one ended
MAX_ENTRIES = 200
ACTOR_TYPES = ("Practitioner", "PractitionerRole", "Location", "HealthcareService", "Device")
# Answers that mean "that time is not available any more" rather than "your request is wrong".
UNAVAILABLE = (FhirNotFound, FhirConflict, FhirPreconditionFailed)


@runtime_checkable
class OperationApi(Protocol):
    """A client that can invoke a FHIR operation: POST `[base]/{path}` with a Parameters body,
    returning the JSON answer. Needed for $hold and $book, which change state."""

    def operation(self, path: str, parameters: dict[str, Any]) -> dict[str, Any]: ...

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]: ...


def ihe_advertised(caps: Capabilities) -> bool:
    """Appointment `$find` and `$book` are listed (a server may name them by the IHE
    OperationDefinition's id, `appointment-find`, instead of the code)."""
    return all(caps.has_operation("Appointment", name)
               or caps.has_operation("Appointment", f"appointment-{name}")
               for name in ("find", "book"))


def _parameters(*parts: tuple[str, str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": name, kind: value} for name, kind, value in parts]}


def _bundle_resources(answer: dict[str, Any], resource_type: str) -> Iterator[dict[str, Any]]:
    entries = answer.get("entry") if answer.get("resourceType") == "Bundle" else None
    for entry in entries[:MAX_ENTRIES] if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
            yield resource


def _issue_codes(answer: dict[str, Any]) -> set[str]:
    outcomes = list(_bundle_resources(answer, "OperationOutcome"))
    if answer.get("resourceType") == "OperationOutcome":
        outcomes.append(answer)
    issues = [i for o in outcomes for i in (o.get("issue") or [])[:20] if isinstance(i, dict)]
    return {str(i.get("code")) for i in issues}


def option_from_proposal(appointment: dict[str, Any]) -> SlotOption | None:
    """A proposed Appointment from `$find` as an option; None when it lacks an id, a time, or is
    not a proposal."""
    proposal = relative_reference(f"Appointment/{appointment.get('id')}", ("Appointment",))
    start, end = parse_instant(appointment.get("start")), parse_instant(appointment.get("end"))
    if proposal is None or start is None or end is None:
        return None
    if appointment.get("status") not in ("proposed", "pending"):
        return None
    slots = slot_references(appointment)
    return SlotOption(
        start=start, end=end, slot=slots[0] if slots else None, slot_version=None,
        schedule=None, actors=tuple(participant_actors(appointment, ACTOR_TYPES)),
        service_type=service_types(appointment), proposal=proposal,
    )


def _same_actors(query: SlotQuery, option: SlotOption) -> bool:
    """A proposal that names a practitioner (or location) must name ours: the server decides
    which resources a visit needs, but we promised the patient the same clinician and place."""
    for wanted, prefixes in ((query.practitioner, ("Practitioner/", "PractitionerRole/")),
                             (query.location, ("Location/",))):
        named = [a for a in option.actors if a.startswith(prefixes)]
        if wanted is not None and named and wanted not in named:
            return False
    return True


class _ProposalUnknown(Exception):
    """$hold answered 404: the proposal expired (or never was); ask `$find` again."""


class IheScheduling:
    def __init__(self, ehr: OperationApi, *, hold: bool) -> None:
        self._ehr = ehr
        self._hold_first = hold

    # -- $find -------------------------------------------------------------------------------

    def _find_parameters(self, query: SlotQuery, start: datetime) -> dict[str, Any]:
        parts: list[tuple[str, str, Any]] = [
            ("start", "valueDateTime", fhir_instant(start)),
            ("end", "valueDateTime", fhir_instant(query.latest)),
        ]
        if query.practitioner is not None:
            parts.append(("practitioner", "valueReference", {"reference": query.practitioner}))
        if query.location is not None:
            parts.append(("location-reference", "valueReference",
                          {"reference": query.location}))
        parts += [("visit-type", "valueString", f"{system}|{code}")
                  for system, code in query.service_type]
        parts.append(("_count", "valueInteger", PAGE))
        return _parameters(*parts)

    def find(self, query: SlotQuery) -> list[SlotOption]:
        """Proposals from `$find`, re-asked from the last proposal's start while the patient's
        availability leaves too few (at most MAX_PAGES calls)."""
        options: dict[str, SlotOption] = {}
        start = query.earliest
        for _page in range(MAX_PAGES):
            answer = self._ehr.operation("Appointment/$find", self._find_parameters(query, start))
            proposals = [p for p in map(option_from_proposal,
                                        _bundle_resources(answer, "Appointment")) if p]
            for option in proposals:
                if (query.accepts(option) and _same_actors(query, option)
                        and service_matches(query.service_type, option.service_type)):
                    options.setdefault(option.key, option)
            last = max((p.start for p in proposals), default=start)
            if len(options) >= query.limit or len(proposals) < PAGE or last <= start:
                break
            start = last
        return list(options.values())

    # -- $hold, $book ------------------------------------------------------------------------

    def book(
        self, appointment_id: str, option: SlotOption, expected_version: str | None
    ) -> dict[str, Any]:
        held = self._held(option) if self._hold_first else None
        try:
            current = self._ehr.read("Appointment", appointment_id)
            version = version_of(current)
            if (expected_version is not None and version != expected_version) or (
                    current.get("status") not in MOVABLE_STATUSES):
                raise AppointmentChanged(f"Appointment/{appointment_id} changed since the offer")
            return self._book(appointment_id, current, option, held)
        except (AppointmentChanged, SlotTaken, FhirNotFound) as exc:
            if held is not None:
                self._cancel_hold(held)
            if isinstance(exc, FhirNotFound):
                raise AppointmentChanged(f"Appointment/{appointment_id} is gone") from exc
            raise

    def _held(self, option: SlotOption) -> dict[str, Any]:
        """Hold the option's time. A proposal lives only as long as the EHR keeps it, and a
        patient may answer hours later (or the option was never a proposal, such as a time a
        cancellation freed): then the time is asked for again and the new proposal held."""
        if option.proposal is not None:
            try:
                return self._hold(option)
            except _ProposalUnknown:
                pass
        fresh = self._proposal_for(option)
        try:
            return self._hold(fresh)
        except _ProposalUnknown as exc:
            raise SlotTaken(f"{fresh.proposal} could not be held") from exc

    def _proposal_for(self, option: SlotOption) -> SlotOption:
        """A current `$find` proposal for exactly this time (and Slot, when it names one)."""
        practitioners = [a for a in option.actors if a.startswith(("Practitioner/",
                                                                   "PractitionerRole/"))]
        locations = [a for a in option.actors if a.startswith("Location/")]
        query = SlotQuery(practitioner=next(iter(practitioners), None),
                          location=next(iter(locations), None),
                          service_type=option.service_type, earliest=option.start,
                          latest=option.start + timedelta(seconds=1), limit=PAGE)
        answer = self._ehr.operation("Appointment/$find", self._find_parameters(query,
                                                                                 option.start))
        for found in map(option_from_proposal, _bundle_resources(answer, "Appointment")):
            if (found is not None and (found.start, found.end) == (option.start, option.end)
                    and option.slot in (None, found.slot)):
                return found
        raise SlotTaken("the time is no longer offered")

    def _hold(self, option: SlotOption) -> dict[str, Any]:
        """The held (pending) Appointment; SlotTaken when the EHR will not hold the time,
        _ProposalUnknown when it no longer knows the proposal."""
        parameters = _parameters(("appointment-reference", "valueReference",
                                  {"reference": option.proposal}))
        try:
            answer = self._ehr.operation("Appointment/$hold", parameters)
        except FhirNotFound as exc:
            raise _ProposalUnknown(str(option.proposal)) from exc
        except UNAVAILABLE as exc:
            raise SlotTaken(f"{option.proposal} could not be held") from exc
        held = next(_bundle_resources(answer, "Appointment"), None)
        if held is None or held.get("status") != "pending" or relative_reference(
                f"Appointment/{held.get('id')}", ("Appointment",)) is None:
            raise SlotTaken(f"{option.proposal} could not be held")
        return held

    def _book(
        self, appointment_id: str, current: dict[str, Any], option: SlotOption,
        held: dict[str, Any] | None,
    ) -> dict[str, Any]:
        held_slots = slot_references(held) if held is not None else []
        target = replace(option, slot=held_slots[0]) if held_slots else option
        parts: list[tuple[str, str, Any]] = []
        if held is not None:
            parts.append(("appointment-reference", "valueReference",
                          {"reference": f"Appointment/{held['id']}"}))
        # meta.versionId stays in: the EHR can refuse to modify a version other than this one.
        parts.append(("appointment-resource", "resource", moved_into(current, target)))
        try:
            answer = self._ehr.operation("Appointment/$book", _parameters(*parts))
        except FhirPreconditionFailed as exc:
            raise AppointmentChanged(f"Appointment/{appointment_id} changed meanwhile") from exc
        except UNAVAILABLE as exc:
            raise SlotTaken(f"{option.proposal} could not be booked") from exc
        booked = next(_bundle_resources(answer, "Appointment"), None)
        if booked is not None and booked.get("status") == "booked":
            log.info("Appointment/%s booked with $book", appointment_id)
            return booked
        if "conflict" in _issue_codes(answer):
            raise AppointmentChanged(f"Appointment/{appointment_id} changed meanwhile")
        raise SlotTaken(f"{option.proposal} could not be booked")

    def _cancel_hold(self, held: dict[str, Any]) -> None:
        """Give a hold back at once (`$book` cancelling it); if that fails it still expires."""
        cancelled = {**held, "status": "cancelled"}
        try:
            self._ehr.operation("Appointment/$book", _parameters(
                ("appointment-resource", "resource", cancelled)))
        except FhirError as exc:
            log.warning("hold Appointment/%s not released (%s); it will expire",
                        held.get("id"), type(exc).__name__)
