"""Reschedule by reply on real parts: R to a reminder, numbered free Slots, a number books one
in the EHR (the new Slot busy, the old one free), reminders follow the new time; and what goes
wrong: a number out of range, a time taken meanwhile, an appointment changed meanwhile, an
answer after the hold, no free time at all."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select

from outreach.access.ehr import scheduler
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.store.models import InboundMessage, ScheduledStep, SlotOffer, Writeback
from tests.outreach.access.conftest import (
    SlotMaker,
    book_patient,
    ehr,
    read,
    reply,
)
from tests.support.api_server import ApiServer
from tests.support.fhir_server import FhirTestServer
from tests.support.twilio_server import TwilioServer

ANA, BEN = "+15555550123", "+15555550124"


def _options(answer: str) -> list[str]:
    return re.findall(r"(\d)\) ([A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2} \d\d:\d\d)", answer)


def _at(instant: str) -> datetime:
    return datetime.fromisoformat(instant)


def _tasks(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return [row.resource["description"] for row in session.scalars(
            select(Writeback).where(Writeback.resource_type == "Task"))]


def test_r_offers_three_free_times_and_a_number_books_one(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, twilio: TwilioServer) -> None:
    held = make_slot(5, 10, status="busy")
    free = [make_slot(2), make_slot(3, 14), make_slot(4), make_slot(6)]
    make_slot(0.2)  # within the lead time (1 day): never offered
    appt = book_patient(rt, ANA, held)
    assert len(twilio.messages) == 1

    offered = reply(rt, api_server, ANA, "R")
    assert [n for n, _ in _options(offered)] == ["1", "2", "3"]
    assert "/o/" in offered  # the same choice on a page
    first_three = [_at(read(rt, f"Slot/{s['id']}")["start"]) for s in free[:3]]

    booked = reply(rt, api_server, ANA, "2")
    assert "You are booked for" in booked
    moved = read(rt, f"Appointment/{appt['id']}")
    assert _at(moved["start"]) == first_three[1] and moved["status"] == "booked"
    assert moved["slot"] == [{"reference": f"Slot/{free[1]['id']}"}]
    assert read(rt, f"Slot/{free[1]['id']}")["status"] == "busy"
    assert read(rt, f"Slot/{held['id']}")["status"] == "free"  # the old time goes back
    with rt.sessions() as session:
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "day-before")).all()
        offer = session.scalars(select(SlotOffer)).one()
    # The reminder re-planned for the new time (intake followed the booking).
    assert max(due) == first_three[1] - timedelta(hours=24)
    assert (offer.state, offer.chosen) == ("booked", 2)


def test_a_number_out_of_range_asks_again_and_books_nothing(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    held = make_slot(5, 10, status="busy")
    make_slot(2)
    make_slot(3)
    appt = book_patient(rt, ANA, held)
    reply(rt, api_server, ANA, "R")
    assert "number from 1 to 2" in reply(rt, api_server, ANA, "7")
    assert _at(read(rt, f"Appointment/{appt['id']}")["start"]) == _at(held["start"])
    assert "You are booked" in reply(rt, api_server, ANA, "1")  # the offer is still open


def test_two_patients_racing_for_one_time_end_with_one_booking(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    only = make_slot(2)
    spare = make_slot(3)
    ana = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    ben = book_patient(rt, BEN, make_slot(5, 11, status="busy"))
    reply(rt, api_server, ANA, "R")
    reply(rt, api_server, BEN, "R")
    assert "You are booked" in reply(rt, api_server, ANA, "1")
    lost = reply(rt, api_server, BEN, "1")
    assert "was just taken" in lost
    # The next free times, offered again: the spare, and the one Ana gave back.
    assert [n for n, _ in _options(lost)] == ["1", "2"]
    assert read(rt, f"Appointment/{ana['id']}")["slot"][0]["reference"] == f"Slot/{only['id']}"
    assert _at(read(rt, f"Appointment/{ben['id']}")["start"]) != _at(only["start"])
    assert "You are booked" in reply(rt, api_server, BEN, "1")
    assert read(rt, f"Appointment/{ben['id']}")["slot"][0]["reference"] == f"Slot/{spare['id']}"


def test_an_appointment_changed_in_the_ehr_meanwhile_is_not_moved(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    make_slot(2)
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    reply(rt, api_server, ANA, "R")
    current = read(rt, f"Appointment/{appt['id']}")
    ehr(rt).update({**current, "comment": "moved to the annex"})
    answer = reply(rt, api_server, ANA, "1")
    assert "has changed since we wrote" in answer
    assert _at(read(rt, f"Appointment/{appt['id']}")["start"]) == _at(appt["start"])
    assert any("had changed in the EHR" in t for t in _tasks(rt))


def test_an_answer_after_the_hold_books_nothing(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, clock: SimulatedClock) -> None:
    make_slot(2)
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    reply(rt, api_server, ANA, "R")
    clock.advance(timedelta(hours=3))
    assert "no longer held" in reply(rt, api_server, ANA, "1")
    assert _at(read(rt, f"Appointment/{appt['id']}")["start"]) == _at(appt["start"])


def test_no_free_time_tells_the_patient_and_asks_staff(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    answer = reply(rt, api_server, ANA, "R")
    assert "no free time to offer" in answer
    assert any("no free time could be offered" in t for t in _tasks(rt))
    with rt.sessions() as session:
        assert session.scalars(select(InboundMessage.outcome)).one().startswith(
            "new time requested; none free")
    assert read(rt, f"Appointment/{appt['id']}")["status"] == "booked"


def test_stop_while_choosing_still_opts_out(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    make_slot(2)
    book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    reply(rt, api_server, ANA, "R")
    assert "no more text messages" in reply(rt, api_server, ANA, "STOP").lower()


def test_an_ehr_advertising_ihe_scheduling_is_booked_through_its_operations(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, fhir: FhirTestServer) -> None:
    fhir.features(ihe_scheduling=True)
    held = make_slot(5, 10, status="busy")
    wanted = make_slot(3)
    appt = book_patient(rt, ANA, held)
    assert [n for n, _ in _options(reply(rt, api_server, ANA, "R"))] == ["1"]
    assert scheduler(rt).mode == "ihe"
    assert "You are booked" in reply(rt, api_server, ANA, "1")
    moved = read(rt, f"Appointment/{appt['id']}")
    assert _at(moved["start"]) == _at(wanted["start"])
    assert read(rt, f"Slot/{wanted['id']}")["status"] == "busy"
