"""Finding slots and booking into them, on the real FHIR test server: plain Schedule/Slot search
with If-Match updates, and the same behaviour through IHE `$find`/`$hold`/`$book`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.client import FhirClient
from connector.errors import FhirError
from connector.scheduling import (
    AppointmentChanged,
    Scheduler,
    SlotOption,
    SlotTaken,
    query_for,
    requested_admits,
)
from connector.slots import parse_instant
from tests.support import fhir_data
from tests.support.fhir_server import FhirTestServer

DAY = (datetime.now(UTC) + timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
DR_LEE, DR_KIM = "Practitioner/dr-lee", "Practitioner/dr-kim"
MAIN, NORTH = "Location/main", "Location/north"
GP, DENTAL = "124", "57"


def at(hour: int, day: int = 1) -> datetime:
    return DAY + timedelta(days=day, hours=hour)


@dataclass
class Clinic:
    server: FhirTestServer
    ehr: FhirClient
    scheduler: Scheduler
    slots: dict[str, str]  # "10:00" -> "Slot/<id>" on Dr Lee's main schedule

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        created, _ = self.ehr.create(resource)
        return created

    def read(self, reference: str) -> dict[str, Any]:
        rtype, _, rid = reference.partition("/")
        return self.ehr.read(rtype, rid)


def _seed(ehr: FhirClient) -> dict[str, str]:
    def create(resource: dict[str, Any]) -> dict[str, Any]:
        return ehr.create(resource)[0]

    lee_main = create(fhir_data.schedule(DR_LEE, MAIN, service_types=(GP,)))
    lee_north = create(fhir_data.schedule(DR_LEE, NORTH, service_types=(GP,)))
    kim_main = create(fhir_data.schedule(DR_KIM, MAIN, service_types=(GP,)))
    main_ref = f"Schedule/{lee_main['id']}"
    # Earlier slots that are the wrong place, the wrong clinician, busy, another service, or
    # before the window: none of them may be offered.
    create(fhir_data.slot(f"Schedule/{lee_north['id']}", at(7)))
    create(fhir_data.slot(f"Schedule/{kim_main['id']}", at(7)))
    create(fhir_data.slot(main_ref, DAY - timedelta(hours=1)))
    slots = {}
    for hour, status, services in [(8, "busy", ()), (9, "free", (DENTAL,)), (10, "free", ()),
                                   (11, "free", ()), (12, "free", ()), (13, "free", ()),
                                   (18, "free", ())]:
        created = create(fhir_data.slot(main_ref, at(hour), status=status,
                                        service_types=services))
        slots[f"{hour:02d}:00"] = f"Slot/{created['id']}"
    return slots


@pytest.fixture(params=["slots", "ihe"])
def clinic(fhir: FhirTestServer, request: pytest.FixtureRequest) -> Iterator[Clinic]:
    fhir.features(ihe_scheduling=request.param == "ihe")
    with FhirClient(fhir.base_url) as ehr:
        scheduler = Scheduler(ehr, ehr.capabilities())
        assert scheduler.mode == request.param
        yield Clinic(fhir, ehr, scheduler, _seed(ehr))


def _booked(clinic: Clinic, patient: str, hour: str) -> dict[str, Any]:
    held = clinic.read(clinic.slots[hour])
    appointment = fhir_data.booked_appointment(patient, held, practitioner=DR_LEE,
                                               location=MAIN, service_types=(GP,))
    return clinic.create(appointment)


def _waiting(clinic: Clinic, patient: str, hours: tuple[int, int] = (0, 24)) -> dict[str, Any]:
    return clinic.create(fhir_data.waitlist_appointment(
        patient, [(at(hours[0]), at(hours[1]))], practitioner=DR_LEE, location=MAIN,
        service_types=(GP,)))


def _window_query(appointment: dict[str, Any], **kwargs: Any) -> Any:
    return query_for(appointment, earliest=DAY, latest=DAY + timedelta(days=3), **kwargs)


def _hours(options: list[SlotOption]) -> list[str]:
    return [f"{o.start.hour:02d}:00" for o in options]


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


# -- finding -----------------------------------------------------------------------------------


def test_options_are_the_same_clinician_place_and_service_free_only_earliest_first(
    clinic: Clinic,
) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    options = clinic.scheduler.find(_window_query(appointment))
    assert _hours(options) == ["10:00", "11:00", "12:00"]
    assert [o.slot for o in options] == [clinic.slots[h] for h in ("10:00", "11:00", "12:00")]
    for option in options:
        assert option.start.tzinfo is UTC
        assert option.end - option.start == timedelta(minutes=30)
        assert DR_LEE in option.actors and MAIN in option.actors


def test_options_stay_inside_the_patients_availability_and_skip_refused_ones(
    clinic: Clinic,
) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")

    def afternoons(start: datetime, end: datetime) -> bool:
        return start.hour >= 13

    assert _hours(clinic.scheduler.find(_window_query(appointment, admits=afternoons))) == [
        "13:00", "18:00"]
    first = clinic.scheduler.find(_window_query(appointment))[0]
    query = replace(_window_query(appointment), exclude=frozenset({first.key}))
    again = clinic.scheduler.find(query)
    assert _hours(again) == ["11:00", "12:00", "13:00"]


def test_a_waiting_patients_requested_period_limits_the_options(clinic: Clinic) -> None:
    waiting = _waiting(clinic, "Patient/ben", hours=(11, 13))
    query = _window_query(waiting, admits=requested_admits(waiting))
    assert _hours(clinic.scheduler.find(query)) == ["11:00", "12:00"]


def test_an_appointment_naming_no_clinician_and_no_place_gets_no_options(clinic: Clinic) -> None:
    nobody = {"resourceType": "Appointment", "status": "waitlist",
              "participant": [{"actor": {"reference": "Patient/ana"}, "status": "accepted"}]}
    assert clinic.scheduler.find(_window_query(nobody)) == []


def test_options_are_found_past_the_first_page(fhir: FhirTestServer) -> None:
    """Twenty-five morning slots (more than a page) the patient cannot take come first."""
    with FhirClient(fhir.base_url) as ehr:
        lee = ehr.create(fhir_data.schedule(DR_LEE, MAIN))[0]
        for quarter in range(25):
            ehr.create(fhir_data.slot(f"Schedule/{lee['id']}",
                                      at(6) + timedelta(minutes=15 * quarter), minutes=15))
        evening = ehr.create(fhir_data.slot(f"Schedule/{lee['id']}", at(19)))[0]
        query = query_for({"participant": [{"actor": {"reference": DR_LEE}}]}, earliest=DAY,
                          latest=DAY + timedelta(days=3),
                          admits=lambda start, end: start.hour >= 19, limit=1)
        assert [o.slot for o in Scheduler(ehr).find(query)] == [f"Slot/{evening['id']}"]


# -- booking -----------------------------------------------------------------------------------


def test_a_reschedule_moves_the_appointment_takes_the_new_slot_and_frees_the_old(
    clinic: Clinic,
) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    option = clinic.scheduler.find(_window_query(appointment))[1]  # 11:00

    booked = clinic.scheduler.book(ref(appointment), option,
                                   expected_version=appointment["meta"]["versionId"])

    stored = clinic.read(ref(appointment))
    assert stored["meta"]["versionId"] == booked["meta"]["versionId"]
    assert stored["status"] == "booked"
    assert parse_instant(stored["start"]) == at(11)
    assert parse_instant(stored["end"]) == at(11) + timedelta(minutes=30)
    assert stored["slot"] == [{"reference": clinic.slots["11:00"]}]
    assert clinic.read(clinic.slots["11:00"])["status"] == "busy"
    assert clinic.read(clinic.slots["08:00"])["status"] == "free"
    assert all(p["status"] == "accepted" for p in stored["participant"])


def test_a_waitlisted_patient_is_booked_into_a_slot(clinic: Clinic) -> None:
    waiting = _waiting(clinic, "Patient/ben", hours=(12, 14))
    option = clinic.scheduler.find(_window_query(waiting, admits=requested_admits(waiting)))[0]

    clinic.scheduler.book(ref(waiting), option, expected_version=waiting["meta"]["versionId"])

    stored = clinic.read(ref(waiting))
    assert stored["status"] == "booked"
    assert parse_instant(stored["start"]) == at(12)
    assert stored["slot"] == [{"reference": clinic.slots["12:00"]}]
    assert stored["requestedPeriod"] == waiting["requestedPeriod"]
    patient = next(p for p in stored["participant"] if p["actor"]["reference"] == "Patient/ben")
    assert patient["status"] == "accepted"
    assert clinic.read(clinic.slots["12:00"])["status"] == "busy"


@pytest.mark.parametrize("proposal", [None, "Appointment/expired-proposal"])
def test_a_time_known_only_by_its_slot_or_by_an_expired_proposal_is_still_booked(
    clinic: Clinic, proposal: str | None,
) -> None:
    """What a cancellation frees, or an offer answered after the EHR forgot its proposal."""
    freed = clinic.read(clinic.slots["13:00"])
    option = SlotOption(start=at(13), end=at(13) + timedelta(minutes=30),
                        slot=clinic.slots["13:00"], slot_version=None, schedule=None,
                        actors=(DR_LEE, MAIN), proposal=proposal)
    waiting = _waiting(clinic, "Patient/ben")

    clinic.scheduler.book(ref(waiting), option, expected_version=waiting["meta"]["versionId"])

    assert clinic.read(ref(waiting))["slot"] == [{"reference": ref(freed)}]
    assert clinic.read(clinic.slots["13:00"])["status"] == "busy"


class Lockstep(FhirClient):
    """A client that waits at `barrier` just before it claims a slot (PUT busy, or `$hold`), so
    two patients have both read the slot as free before either claims it: the race is lost the
    same way on every run, not only when the threads happen to interleave."""

    def __init__(self, base_url: str, barrier: threading.Barrier) -> None:
        super().__init__(base_url)
        self.barrier = barrier

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        if resource["resourceType"] == "Slot" and resource["status"] == "busy":
            self.barrier.wait(timeout=10)
        return super().update(resource, if_match=if_match)

    def operation(self, path: str, parameters: dict[str, Any]) -> dict[str, Any]:
        if path == "Appointment/$hold":
            self.barrier.wait(timeout=10)
        return super().operation(path, parameters)


def test_two_patients_racing_for_one_slot_end_with_one_booking(clinic: Clinic) -> None:
    waiting = [_waiting(clinic, "Patient/ana"), _waiting(clinic, "Patient/ben")]
    # Each patient was offered the 10:00 slot (in IHE mode each by their own $find).
    offers = [clinic.scheduler.find(_window_query(w))[0] for w in waiting]
    assert {o.slot for o in offers} == {clinic.slots["10:00"]}
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def accept(appointment: dict[str, Any], option: SlotOption) -> None:
        with Lockstep(clinic.server.base_url, barrier) as ehr:
            scheduler = Scheduler(ehr, ehr.capabilities())
            try:
                outcomes[ref(appointment)] = scheduler.book(
                    ref(appointment), option, expected_version=appointment["meta"]["versionId"])
            except FhirError as exc:
                outcomes[ref(appointment)] = exc

    threads = [threading.Thread(target=accept, args=pair) for pair in zip(waiting, offers,
                                                                           strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    lost = [o for o in outcomes.values() if isinstance(o, FhirError)]
    assert len(outcomes) == 2 and len(lost) == 1
    assert isinstance(lost[0], SlotTaken)
    stored = [clinic.read(ref(w)) for w in waiting]
    assert sorted(a["status"] for a in stored) == ["booked", "waitlist"]
    winner = next(a for a in stored if a["status"] == "booked")
    assert winner["slot"] == [{"reference": clinic.slots["10:00"]}]
    assert clinic.read(clinic.slots["10:00"])["status"] == "busy"


def test_an_appointment_changed_meanwhile_is_not_moved_and_the_slot_is_free_again(
    clinic: Clinic,
) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    option = clinic.scheduler.find(_window_query(appointment))[0]
    changed = clinic.ehr.update({**appointment, "comment": "moved by the front desk"})

    with pytest.raises(AppointmentChanged):
        clinic.scheduler.book(ref(appointment), option,
                              expected_version=appointment["meta"]["versionId"])

    stored = clinic.read(ref(appointment))
    assert stored["meta"]["versionId"] == changed["meta"]["versionId"]
    assert parse_instant(stored["start"]) == at(8)
    assert clinic.read(clinic.slots["10:00"])["status"] == "free"
    assert clinic.read(clinic.slots["08:00"])["status"] == "busy"
    # The freed slot can still be booked by the next patient.
    waiting = _waiting(clinic, "Patient/ben")
    again = clinic.scheduler.find(_window_query(waiting))[0]
    assert again.slot == clinic.slots["10:00"]
    clinic.scheduler.book(ref(waiting), again, expected_version=waiting["meta"]["versionId"])


class ChangedAfterRead(FhirClient):
    """A client whose every Appointment read is followed at once by someone else's change: the
    EHR must refuse our write of the version we read (If-Match, or $book's versionId)."""

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        found = super().read(resource_type, resource_id)
        if resource_type == "Appointment":
            super().update({**found, "comment": "changed at the front desk"})
        return found


def test_an_appointment_changed_between_our_read_and_our_write_is_not_moved(
    clinic: Clinic,
) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    option = clinic.scheduler.find(_window_query(appointment))[0]
    with ChangedAfterRead(clinic.server.base_url) as ehr, pytest.raises(AppointmentChanged):
        Scheduler(ehr, ehr.capabilities()).book(ref(appointment), option,
                                                expected_version=None)

    stored = clinic.read(ref(appointment))
    assert stored["comment"] == "changed at the front desk"
    assert parse_instant(stored["start"]) == at(8)
    assert clinic.read(clinic.slots["10:00"])["status"] == "free"


def test_a_cancelled_appointment_is_not_rebooked(clinic: Clinic) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    option = clinic.scheduler.find(_window_query(appointment))[0]
    cancelled = clinic.ehr.update({**appointment, "status": "cancelled"})

    with pytest.raises(AppointmentChanged):
        clinic.scheduler.book(ref(appointment), option,
                              expected_version=cancelled["meta"]["versionId"])

    assert clinic.read(ref(appointment))["status"] == "cancelled"
    assert clinic.read(clinic.slots["10:00"])["status"] == "free"


def test_a_slot_taken_after_the_offer_is_refused(clinic: Clinic) -> None:
    appointment = _booked(clinic, "Patient/ana", "08:00")
    option = clinic.scheduler.find(_window_query(appointment))[0]
    slot = clinic.read(clinic.slots["10:00"])
    clinic.ehr.update({**slot, "status": "busy"})  # booked at the front desk meanwhile

    with pytest.raises(SlotTaken):
        clinic.scheduler.book(ref(appointment), option,
                              expected_version=appointment["meta"]["versionId"])

    assert parse_instant(clinic.read(ref(appointment))["start"]) == at(8)


# -- choosing the path -------------------------------------------------------------------------


def test_ihe_operations_are_used_only_when_advertised_and_the_client_can_post_them(
    fhir: FhirTestServer,
) -> None:
    with FhirClient(fhir.base_url) as able:
        assert Scheduler(able, able.capabilities()).mode == "slots"
        fhir.features(ihe_scheduling=True)
        assert Scheduler(able, able.capabilities()).mode == "ihe"
        assert Scheduler(able).mode == "slots"
