"""Open slots and booking into them: IHE `$find`/`$hold`/`$book` where the EHR offers them, else
Schedule/Slot searches and Slot + Appointment updates with If-Match.

Why the Slot is written first: two patients who accept the same slot both read its version,
both PUT it busy with `If-Match` on that version, and the EHR lets exactly one through; the
other gets SlotTaken before any Appointment changed. Only then is the Appointment moved, itself
with `If-Match` on the version the offer was made on; if that fails the Slot is freed again.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Literal

from connector.capabilities import Capabilities, parse_capabilities
from connector.client import FhirApi
from connector.errors import (
    AppointmentChanged,
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    FhirUnavailable,
    FhirUnsupported,
    InvalidResource,
    SlotTaken,
)
from connector.polling import fhir_instant
from connector.scheduling_ihe import IheScheduling, OperationApi, ihe_advertised
from connector.slots import (
    MOVABLE_STATUSES,
    PRACTITIONER_TYPES,
    SlotOption,
    SlotQuery,
    appointment_like,
    moved_into,
    new_appointment,
    parse_instant,
    query_for,
    relative_reference,
    requested_admits,
    schedule_actors,
    service_matches,
    service_types,
    slot_references,
    split_reference,
    version_of,
)
from connector.writeback import identifier_query

__all__ = [
    "AppointmentChanged", "Scheduler", "SlotOption", "SlotQuery", "SlotTaken", "appointment_like",
    "query_for", "requested_admits",
]

log = logging.getLogger(__name__)

MAX_SCHEDULES = 20  # one practitioner at one location rarely has more; bounds the Slot query
MAX_PAGES = 5       # Slot pages read per search, however many the EHR would give
LOST_RACE = (FhirPreconditionFailed, FhirConflict)


def _if_match(version: str) -> str:
    return f'W/"{version}"'


class Scheduler:
    """Finds options and books into them on one EHR. `capabilities` is the EHR's
    CapabilityStatement (or its parsed form): when it advertises Appointment `$find` and `$book`
    and the client can POST operations, those are used; without it, Slots are searched and
    updated directly."""

    def __init__(
        self, ehr: FhirApi, capabilities: dict[str, Any] | Capabilities | None = None
    ) -> None:
        self._ehr = ehr
        caps = (parse_capabilities(capabilities) if isinstance(capabilities, dict)
                else capabilities)
        self._ihe: IheScheduling | None = None
        if caps is not None and ihe_advertised(caps):
            if isinstance(ehr, OperationApi):
                self._ihe = IheScheduling(ehr, hold=caps.has_operation("Appointment", "hold"))
            else:
                log.warning("the EHR advertises IHE scheduling, but this client cannot POST "
                            "operations: searching and updating Slots instead")

    @property
    def mode(self) -> Literal["ihe", "slots"]:
        return "ihe" if self._ihe is not None else "slots"

    # -- finding -----------------------------------------------------------------------------

    def find(self, query: SlotQuery) -> list[SlotOption]:
        """Up to `query.limit` options, earliest first, each inside the window and the
        patient's availability, none in `query.exclude`."""
        if not query.anchored or query.limit <= 0:
            return []
        _check_actors(query)
        found = self._ihe.find(query) if self._ihe is not None else self._find_slots(query)
        return sorted(found, key=lambda option: (option.start, option.key))[:query.limit]

    def _schedules(self, query: SlotQuery) -> dict[str, dict[str, Any]]:
        actors = [a for a in (query.practitioner, query.location) if a is not None]
        params: dict[str, str | int | list[str]] = {"actor": actors, "_count": MAX_SCHEDULES}
        found: dict[str, dict[str, Any]] = {}
        for schedule in islice(self._ehr.search("Schedule", params), MAX_SCHEDULES):
            ref = relative_reference(f"Schedule/{schedule.get('id')}", ("Schedule",))
            # Checked here too: a server that ignored a parameter must not widen the search.
            mine = set(schedule_actors(schedule))
            if ref is not None and schedule.get("active") is not False and mine.issuperset(actors):
                found[ref] = schedule
        return found

    def _find_slots(self, query: SlotQuery) -> list[SlotOption]:
        schedules = self._schedules(query)
        if not schedules:
            return []
        page = min(100, max(20, query.limit * 5))  # room for slots the patient cannot take
        params: dict[str, str | int | list[str]] = {
            "schedule": ",".join(schedules), "status": "free",
            "start": [f"ge{fhir_instant(query.earliest)}", f"lt{fhir_instant(query.latest)}"],
            "_sort": "start", "_count": page,
        }
        options: list[SlotOption] = []
        for slot in islice(self._ehr.search("Slot", params), MAX_PAGES * page):
            option = _slot_option(slot, schedules)
            if (option is not None and query.accepts(option)
                    and service_matches(query.service_type, option.service_type)):
                options.append(option)
                if len(options) == query.limit:
                    break
        return options

    # -- booking -----------------------------------------------------------------------------

    def book(
        self, appointment: str, option: SlotOption, *, expected_version: str | None
    ) -> dict[str, Any]:
        """Book `appointment` ("Appointment/<id>", booked or waitlist) into `option`; returns
        the updated Appointment. SlotTaken: someone else has the slot (nothing changed).
        AppointmentChanged: the appointment is no longer `expected_version` or movable (the
        slot is free again)."""
        appointment_id = split_reference(appointment, "Appointment")
        if self._ihe is not None:
            return self._ihe.book(appointment_id, option, expected_version)
        if option.slot is None:
            raise FhirUnsupported("this option has no Slot; only the EHR's $book could book it")
        slot_id = split_reference(option.slot, "Slot")
        busy_version = self._take(slot_id, option)
        try:
            before, booked = self._move(appointment_id, option, expected_version)
        except AppointmentChanged:
            self.release(option.slot, version=busy_version)
            raise
        except FhirUnavailable:
            # The Appointment PUT may have landed before the connection failed: freeing the slot
            # now could double-book it. A busy slot nobody holds is the lesser harm.
            log.warning("Appointment/%s: EHR unavailable while booking Slot/%s; the slot stays "
                        "busy", appointment_id, slot_id)
            raise
        for old in slot_references(before):
            if old != option.slot:
                self.release(old)
        log.info("Appointment/%s booked into Slot/%s", appointment_id, slot_id)
        return booked

    def book_new(self, patient: str, option: SlotOption, *,
                 identifier: tuple[str, str]) -> dict[str, Any]:
        """A new Appointment for `patient` ("Patient/<id>") booked into `option` (a follow-up
        booked by reply); returns it. SlotTaken: someone else has the time. `identifier` makes
        a retried create return the first one."""
        split_reference(patient, "Patient")
        wanted = new_appointment(patient, option, identifier)
        query = identifier_query(*identifier)
        if self._ihe is not None:
            proposed, _ = self._ehr.create({**wanted, "status": "proposed"}, if_none_exist=query)
            try:
                return self._ihe.book(str(proposed["id"]), option, version_of(proposed))
            except (SlotTaken, AppointmentChanged):
                self._ehr.update({**proposed, "status": "cancelled"})
                raise
        if option.slot is None:
            raise FhirUnsupported("this option has no Slot; only the EHR's $book could book it")
        busy_version = self._take(split_reference(option.slot, "Slot"), option)
        try:
            created, _ = self._ehr.create(wanted, if_none_exist=query)
        except FhirUnavailable:
            log.warning("EHR unavailable while creating an appointment in %s; the slot stays "
                        "busy", option.slot)
            raise
        except FhirError:
            self.release(option.slot, version=busy_version)
            raise
        log.info("Appointment/%s created in %s", created.get("id"), option.slot)
        return created

    def _take(self, slot_id: str, option: SlotOption) -> str | None:
        """Set the Slot busy with If-Match on the version that is free; its new version."""
        try:
            slot = self._ehr.read("Slot", slot_id)
        except FhirNotFound as exc:
            raise SlotTaken(f"Slot/{slot_id} is gone") from exc
        unchanged = (parse_instant(slot.get("start")) == option.start
                     and parse_instant(slot.get("end")) == option.end)
        if slot.get("status") != "free" or not unchanged:
            raise SlotTaken(f"Slot/{slot_id} is no longer free at the offered time")
        version = version_of(slot)
        if version is None:
            raise FhirUnsupported(f"Slot/{slot_id} has no versionId: it cannot be booked "
                                  "without racing another booking")
        try:
            busy = self._ehr.update({**slot, "status": "busy"}, if_match=_if_match(version))
        except LOST_RACE as exc:
            raise SlotTaken(f"Slot/{slot_id} was taken meanwhile") from exc
        return version_of(busy)

    def _move(
        self, appointment_id: str, option: SlotOption, expected_version: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the Appointment before, after) being moved into the option."""
        try:
            current = self._ehr.read("Appointment", appointment_id)
        except FhirNotFound as exc:
            raise AppointmentChanged(f"Appointment/{appointment_id} is gone") from exc
        version = version_of(current)
        _check_movable(appointment_id, current, version, expected_version)
        assert version is not None  # _check_movable refuses a resource without one
        try:
            updated = self._ehr.update(moved_into(current, option), if_match=_if_match(version))
        except LOST_RACE as exc:
            raise AppointmentChanged(f"Appointment/{appointment_id} changed meanwhile") from exc
        return current, updated

    def release(self, slot: str, *, version: str | None = None) -> bool:
        """Set a busy Slot free again (If-Match on the version read; once more if that raced).
        False, and a warning, when it could not be: the booking stands either way."""
        slot_id = split_reference(slot, "Slot")
        for _attempt in range(2):
            try:
                current = self._ehr.read("Slot", slot_id)
                read_version = version_of(current)
                if current.get("status") not in ("busy", "busy-tentative"):
                    return True
                if version is not None and read_version != version:
                    log.warning("Slot/%s changed since we took it; left as it is", slot_id)
                    return False
                self._ehr.update({**current, "status": "free"},
                                 if_match=_if_match(read_version) if read_version else None)
                return True
            except FhirPreconditionFailed:
                continue
            except FhirError as exc:
                log.warning("Slot/%s could not be freed: %s", slot_id, type(exc).__name__)
                return False
        log.warning("Slot/%s could not be freed: it kept changing", slot_id)
        return False


def _check_actors(query: SlotQuery) -> None:
    """A query may be built from stored data: its references are checked before they are sent."""
    for actor, types in ((query.practitioner, PRACTITIONER_TYPES), (query.location, ("Location",))):
        if actor is not None and relative_reference(actor, types) is None:
            raise InvalidResource(f"not a {' or '.join(types)} reference: {actor[:80]!r}")


def _check_movable(
    appointment_id: str, current: dict[str, Any], version: str | None,
    expected_version: str | None,
) -> None:
    if version is None:
        raise FhirUnsupported(f"Appointment/{appointment_id} has no versionId: it cannot be "
                              "moved without racing another change")
    if expected_version is not None and version != expected_version:
        raise AppointmentChanged(f"Appointment/{appointment_id} is no longer the version "
                                 "offered on")
    if current.get("status") not in MOVABLE_STATUSES:
        raise AppointmentChanged(f"Appointment/{appointment_id} is no longer movable "
                                 f"(status {str(current.get('status'))[:20]!r})")


def _slot_option(slot: dict[str, Any], schedules: dict[str, dict[str, Any]]) -> SlotOption | None:
    """A free Slot of one of `schedules` as an option; None for anything else."""
    ref = relative_reference(f"Slot/{slot.get('id')}", ("Slot",))
    schedule_ref = slot.get("schedule", {}).get("reference") if isinstance(
        slot.get("schedule"), dict) else None
    schedule = schedules.get(schedule_ref) if isinstance(schedule_ref, str) else None
    start, end = parse_instant(slot.get("start")), parse_instant(slot.get("end"))
    if ref is None or schedule is None or slot.get("status") != "free" or not (start and end):
        return None
    return SlotOption(
        start=start, end=end, slot=ref, slot_version=version_of(slot), schedule=schedule_ref,
        actors=schedule_actors(schedule),
        # A Slot's own serviceType overrides its Schedule's (R4 Slot.serviceType).
        service_type=service_types(slot) or service_types(schedule),
    )
