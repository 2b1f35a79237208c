"""Waitlist backfill on real parts: a cancellation frees a Slot, the longest-waiting patient
whose requestedPeriod holds it is texted, their YES books it (the waitlist Appointment becomes
booked in the Slot, which is then busy); no answer within the hold asks the next; a late YES
hears it is taken; two YES at once make one booking."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import Backfill, SlotOffer, Writeback
from outreach.worker import jobs
from tests.outreach.access.conftest import (
    DOCTOR,
    NOW,
    PLACE,
    WAITLIST_JOURNEY,
    SlotMaker,
    book_patient,
    create,
    ehr,
    read,
    reply,
)
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import patient, waitlist_appointment
from tests.support.twilio_server import TwilioServer

CANCELLER, FIRST, SECOND, ELSEWHERE = ("+15555550120", "+15555550121", "+15555550122",
                                       "+15555550123")


@pytest.fixture
def at_once() -> int:
    return 1


@pytest.fixture
def rules_dir(rules_dir: Path, at_once: int) -> Path:
    (rules_dir / "waitlist.yaml").write_text(
        WAITLIST_JOURNEY.replace("at_once: 1 ", f"at_once: {at_once} "))
    return rules_dir


def _wait(rt: Runtime, mobile: str, days_waiting: int, *, from_day: float = 1,
          to_day: float = 10, practitioner: str | None = DOCTOR) -> dict[str, Any]:
    pat = create(rt, patient(email=None, mobile=mobile))
    return create(rt, waitlist_appointment(
        f"Patient/{pat['id']}", [(NOW + timedelta(days=from_day), NOW + timedelta(days=to_day))],
        practitioner=practitioner, location=PLACE, created=NOW - timedelta(days=days_waiting)))


def _cancel(rt: Runtime, appointment: dict[str, Any]) -> None:
    """The EHR cancels the appointment and frees its Slot, and tells us (the notification)."""
    current = read(rt, f"Appointment/{appointment['id']}")
    cancelled = ehr(rt).update({**current, "status": "cancelled"})
    held = read(rt, current["slot"][0]["reference"])
    ehr(rt).update({**held, "status": "free"})
    ingest(rt, cancelled, source="test")
    drain(rt)


def _texts_to(twilio: TwilioServer, number: str) -> list[str]:
    return [r["Body"] for r in twilio.state.requests if r.get("To") == number]


def _sweep(rt: Runtime) -> None:
    jobs.sweep(rt)
    drain(rt)


def test_a_freed_slot_goes_to_the_longest_waiting_patient_who_says_yes(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, twilio: TwilioServer) -> None:
    freed = make_slot(3, 10, status="busy")
    booked = book_patient(rt, CANCELLER, freed)
    first = _wait(rt, FIRST, days_waiting=30)
    _wait(rt, SECOND, days_waiting=5)
    _wait(rt, ELSEWHERE, days_waiting=60, from_day=5)  # cannot come that day
    _cancel(rt, booked)
    _sweep(rt)
    (offer,) = _texts_to(twilio, FIRST)
    assert "Reply YES within 2 hours" in offer
    assert _texts_to(twilio, SECOND) == [] and _texts_to(twilio, ELSEWHERE) == []

    assert "You are booked for" in reply(rt, api_server, FIRST, "Yes")
    now_booked = read(rt, f"Appointment/{first['id']}")
    assert now_booked["status"] == "booked"
    assert now_booked["slot"] == [{"reference": f"Slot/{freed['id']}"}]
    assert read(rt, f"Slot/{freed['id']}")["status"] == "busy"
    with rt.sessions() as session:
        assert session.scalars(select(Backfill.state)).one() == "filled"
        (answer,) = session.scalars(select(Writeback.resource).where(
            Writeback.identifier.like("%|inbound-%"))).all()
    # The YES is on the waitlisted patient's chart, about the appointment it booked.
    assert answer["about"] == [{"reference": f"Appointment/{first['id']}"}]
    assert answer["sender"] == {"reference": now_booked["participant"][0]["actor"]["reference"]}


def test_no_answer_within_the_hold_asks_the_next_and_a_late_yes_is_told_it_is_taken(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, twilio: TwilioServer,
        clock: SimulatedClock) -> None:
    freed = make_slot(3, 10, status="busy")
    booked = book_patient(rt, CANCELLER, freed)
    first = _wait(rt, FIRST, days_waiting=30)
    second = _wait(rt, SECOND, days_waiting=5)
    _cancel(rt, booked)
    _sweep(rt)
    clock.advance(timedelta(hours=1))
    _sweep(rt)
    assert _texts_to(twilio, SECOND) == []  # still within the first patient's hold
    clock.advance(timedelta(hours=1, minutes=1))
    _sweep(rt)
    assert len(_texts_to(twilio, SECOND)) == 1
    assert "You are booked" in reply(rt, api_server, SECOND, "YES")
    assert "has been taken" in reply(rt, api_server, FIRST, "yes")
    assert read(rt, f"Appointment/{first['id']}")["status"] == "waitlist"
    assert read(rt, f"Appointment/{second['id']}")["status"] == "booked"


def test_no_keeps_the_patient_waiting_and_asks_the_next_at_once(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, twilio: TwilioServer) -> None:
    booked = book_patient(rt, CANCELLER, make_slot(3, 10, status="busy"))
    first = _wait(rt, FIRST, days_waiting=30)
    _wait(rt, SECOND, days_waiting=5)
    _cancel(rt, booked)
    _sweep(rt)
    assert "stay on the waiting list" in reply(rt, api_server, FIRST, "No")
    _sweep(rt)
    assert len(_texts_to(twilio, SECOND)) == 1
    assert read(rt, f"Appointment/{first['id']}")["status"] == "waitlist"


@pytest.mark.parametrize("at_once", [2])
def test_two_yes_at_once_make_one_booking(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, twilio: TwilioServer) -> None:
    booked = book_patient(rt, CANCELLER, make_slot(3, 10, status="busy"))
    first = _wait(rt, FIRST, days_waiting=30)
    second = _wait(rt, SECOND, days_waiting=5)
    _cancel(rt, booked)
    _sweep(rt)
    assert len(_texts_to(twilio, FIRST)) == len(_texts_to(twilio, SECOND)) == 1
    answers: dict[str, str] = {}

    def say_yes(number: str) -> None:
        answers[number] = reply(rt, api_server, number, "YES")

    threads = [threading.Thread(target=say_yes, args=(n,)) for n in (FIRST, SECOND)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted("You are booked" in a for a in answers.values()) == [False, True]
    statuses = sorted(read(rt, f"Appointment/{a['id']}")["status"] for a in (first, second))
    assert statuses == ["booked", "waitlist"]
    with rt.sessions() as session:
        assert sorted(session.scalars(select(SlotOffer.state))) == ["booked", "taken"]
