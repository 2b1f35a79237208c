"""Reading scheduling queries and options out of FHIR resources: odd appointments, slotless IHE
proposals, requested periods."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from connector.errors import InvalidResource
from connector.scheduling import Scheduler
from connector.scheduling_ihe import option_from_proposal
from connector.slots import (
    SlotOption,
    moved_into,
    query_for,
    requested_admits,
    split_reference,
)
from tests.support import fhir_data

EARLIEST = datetime(2030, 3, 4, tzinfo=UTC)
LATEST = EARLIEST + timedelta(days=14)
GP = (fhir_data.SERVICE_TYPE_SYSTEM, "124")


def _appointment(*actors: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    participants = [a if isinstance(a, dict) else {"actor": {"reference": a},
                                                   "status": "accepted"} for a in actors]
    return {"resourceType": "Appointment", "status": "booked", "participant": participants,
            **extra}


def _query(appointment: dict[str, Any]) -> Any:
    return query_for(appointment, earliest=EARLIEST, latest=LATEST)


def test_the_query_names_the_appointments_practitioner_location_and_service_type() -> None:
    query = _query(_appointment("Patient/p", "Practitioner/lee", "Location/main",
                                serviceType=[fhir_data.service_type("124")]))
    assert (query.practitioner, query.location, query.service_type) == (
        "Practitioner/lee", "Location/main", (GP,))
    assert (query.earliest, query.latest, query.limit) == (EARLIEST, LATEST, 3)


def test_a_part_the_appointment_does_not_name_is_left_open() -> None:
    no_practitioner = _query(_appointment("Patient/p", "Location/main"))
    assert (no_practitioner.practitioner, no_practitioner.location) == (None, "Location/main")
    no_location = _query(_appointment("Patient/p", "Practitioner/lee"))
    assert (no_location.practitioner, no_location.location) == ("Practitioner/lee", None)
    no_service = _query(_appointment("Patient/p", "Practitioner/lee"))
    assert no_service.service_type == ()
    assert no_practitioner.anchored and no_location.anchored


class NoEhr:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the EHR was asked ({name})")


def test_an_appointment_naming_nobody_but_the_patient_is_not_anchored_and_asks_nothing() -> None:
    query = _query(_appointment("Patient/p", serviceType=[fhir_data.service_type("124")]))
    assert (query.practitioner, query.location, query.anchored) == (None, None, False)
    assert Scheduler(NoEhr()).find(query) == []


@pytest.mark.parametrize("actors", [
    {"practitioner": "Practitioner/../../admin"}, {"location": "Location/a?b=c"},
    {"practitioner": "Location/main"}, {"location": "https://elsewhere.example/Location/x"},
])
def test_a_query_with_references_outside_fhirs_grammar_is_refused_before_any_request(
    actors: dict[str, str],
) -> None:
    query = replace(_query(_appointment("Practitioner/lee", "Location/main")), **actors)
    with pytest.raises(InvalidResource):
        Scheduler(NoEhr()).find(query)


def test_declined_foreign_contained_and_malformed_actors_are_not_used() -> None:
    query = _query(_appointment(
        {"actor": {"reference": "Practitioner/gone"}, "status": "declined"},
        "https://other.example/fhir/Practitioner/x",
        "#contained",
        "Practitioner/../Patient",
        "Location/has space",
        {"actor": "not a reference"},
        "not a participant",
        "PractitionerRole/lee-gp",
    ))
    assert (query.practitioner, query.location) == ("PractitionerRole/lee-gp", None)


def test_a_practitioner_is_preferred_to_a_role_and_the_first_one_wins() -> None:
    query = _query(_appointment("PractitionerRole/r", "Practitioner/a", "Practitioner/b"))
    assert query.practitioner == "Practitioner/a"


def test_service_types_keep_only_codings_with_system_and_code_once_each() -> None:
    query = _query(_appointment("Practitioner/a", serviceType=[
        {"text": "GP"}, {"coding": [{"code": "124"}, {"system": GP[0], "code": "124"}]},
        fhir_data.service_type("124"), "junk"]))
    assert query.service_type == (GP,)


def test_instants_are_read_in_utc_and_times_without_a_zone_are_not_used() -> None:
    waiting = _appointment("Patient/p", requestedPeriod=[
        {"start": "2030-03-05T09:00:00+02:00", "end": "2030-03-05T12:00:00+02:00"},
        {"start": "2030-03-06T09:00:00", "end": "2030-03-06T17:00:00"},  # no zone: ignored
    ])
    admits = requested_admits(waiting)
    assert admits is not None
    assert admits(datetime(2030, 3, 5, 7, tzinfo=UTC), datetime(2030, 3, 5, 7, 30, tzinfo=UTC))
    assert not admits(datetime(2030, 3, 5, 9, 45, tzinfo=UTC),
                      datetime(2030, 3, 5, 10, 15, tzinfo=UTC))  # ends after 12:00 +02:00
    assert not admits(datetime(2030, 3, 6, 10, tzinfo=UTC), datetime(2030, 3, 6, 11, tzinfo=UTC))


def test_no_requested_period_means_no_availability_limit() -> None:
    assert requested_admits(_appointment("Patient/p")) is None
    open_ended = requested_admits(_appointment("Patient/p", requestedPeriod=[
        {"start": "2030-03-05T00:00:00Z"}]))
    assert open_ended is not None
    assert open_ended(datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, 1, tzinfo=UTC))


def test_a_slotless_ihe_proposal_is_an_option_keyed_by_its_time() -> None:
    option = option_from_proposal({
        "resourceType": "Appointment", "id": "prop-1", "status": "proposed",
        "start": "2030-03-05T10:00:00+01:00", "end": "2030-03-05T10:20:00+01:00",
        "participant": [{"actor": {"reference": "Practitioner/lee"}, "status": "needs-action"},
                        {"actor": {"reference": "Location/main"}, "status": "needs-action"}],
    })
    assert option is not None
    assert option.slot is None and option.proposal == "Appointment/prop-1"
    assert option.start == datetime(2030, 3, 5, 9, tzinfo=UTC)
    assert option.actors == ("Practitioner/lee", "Location/main")
    assert option.key == "2030-03-05T09:00:00.000Z/2030-03-05T09:20:00.000Z"


@pytest.mark.parametrize("broken", [
    {"id": "../x"}, {"start": None}, {"end": "tomorrow"}, {"status": "booked"},
])
def test_a_proposal_without_a_valid_id_time_or_proposed_status_is_not_an_option(
    broken: dict[str, Any],
) -> None:
    proposal = {"resourceType": "Appointment", "id": "p", "status": "proposed",
                "start": "2030-03-05T10:00:00Z", "end": "2030-03-05T10:20:00Z", **broken}
    assert option_from_proposal(proposal) is None


def test_moving_a_waiting_patient_books_the_time_slot_and_adds_the_schedules_actors() -> None:
    start = datetime(2030, 3, 5, 10, tzinfo=timezone(timedelta(hours=1)))
    option = SlotOption(start=start, end=start + timedelta(minutes=30), slot="Slot/s1",
                        slot_version="v1", schedule="Schedule/a",
                        actors=("Practitioner/lee", "Location/main"))
    waiting = fhir_data.waitlist_appointment("Patient/p", [(EARLIEST, LATEST)],
                                             practitioner="Practitioner/lee")
    moved = moved_into({**waiting, "minutesDuration": 15}, option)
    assert (moved["status"], moved["start"], moved["end"]) == (
        "booked", "2030-03-05T09:00:00.000Z", "2030-03-05T09:30:00.000Z")
    assert moved["slot"] == [{"reference": "Slot/s1"}]
    assert "minutesDuration" not in moved
    assert [(p["actor"]["reference"], p["status"]) for p in moved["participant"]] == [
        ("Patient/p", "accepted"), ("Practitioner/lee", "accepted"),
        ("Location/main", "accepted")]
    assert waiting["status"] == "waitlist"  # the input is not changed


@pytest.mark.parametrize("reference", ["Slot/../x", "Appointment/1", "Slot/", "Slot/a b", 7])
def test_a_slot_reference_outside_fhirs_grammar_is_refused_before_any_request(
    reference: Any,
) -> None:
    with pytest.raises(InvalidResource):
        split_reference(reference, "Slot")
