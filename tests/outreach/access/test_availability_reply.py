"""When a patient can come, said while choosing a new time (by SMS: "only mornings", "after 5pm",
"por las tardes"; or ticked on the offer page), on real parts: it is kept with their
preferences and as `requestedPeriod` on their waitlisted Appointments in the EHR, new times
inside it replace the ones offered, and the next request for another time offers only times
inside it. The reply is recorded as the answer to an offer, not as free text for staff."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from channels.availability import Availability
from channels.dates import format_short
from connector.errors import FhirUnavailable
from outreach.access import options as shown
from outreach.core.ports import Runtime
from outreach.reports.facts import load_appointments
from outreach.store.models import InboundMessage, PatientPreference, SlotOffer, Writeback
from rules.recipients import patient_reference
from tests.outreach.access.conftest import (
    NOW,
    PLACE,
    SlotMaker,
    book_patient,
    create,
    read,
    reply,
)
from tests.outreach.access.test_offer_page import get, link_in, post, read_page
from tests.support.api_server import ApiServer
from tests.support.fhir_data import waitlist_appointment

ANA = "+15555550123"
UTC = ZoneInfo("UTC")
HOURS = (9, 14, 18)  # a morning, an afternoon and an evening slot on each day


@pytest.fixture
def week(make_slot: SlotMaker) -> list[dict[str, Any]]:
    """Free 30-minute slots over eight days, at 09:00, 14:00 and 18:00."""
    return [make_slot(day, hour) for day in range(2, 10) for hour in HOURS]


def _start(slot: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(slot["start"]), datetime.fromisoformat(slot["end"])


def _free_inside(rt: Runtime, slots: list[dict[str, Any]], availability: Availability,
                 count: int = 3) -> list[datetime]:
    """The first free times (as the EHR has them now) that the availability admits."""
    free = [read(rt, f"Slot/{s['id']}") for s in slots]
    inside = sorted(_start(s)[0] for s in free
                    if s["status"] == "free" and availability.admits(*_start(s), UTC))
    return inside[:count]


def _open_offer(rt: Runtime) -> SlotOffer:
    with rt.sessions() as session:
        return session.scalars(select(SlotOffer).where(SlotOffer.state == "open")).one()


def _offered(rt: Runtime) -> list[datetime]:
    return [o.start for o in shown.loaded(_open_offer(rt).options)]


def _stored(rt: Runtime, patient: str) -> str | None:
    with rt.sessions() as session:
        row = session.get(PatientPreference, patient)
        return row.availability if row else None


def _inbound(rt: Runtime) -> list[tuple[str, str, str | None]]:
    with rt.sessions() as session:
        return [(m.body, m.intent, m.rule) for m in session.scalars(
            select(InboundMessage).order_by(InboundMessage.id))]


def _tasks(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return [row.resource["description"] for row in session.scalars(
            select(Writeback).where(Writeback.resource_type == "Task"))]


def _patient_of(appointment: dict[str, Any]) -> str:
    found = patient_reference(appointment)
    assert found is not None
    return found


@pytest.mark.parametrize(("said", "language", "codes", "answer"), [
    ("only mornings", None, "mo-su@08:00-12:00", "Thank you, we will offer you times: mornings."),
    ("after 5pm", None, "mo-su@17:00-24:00", "Thank you, we will offer you times: after 5 pm."),
    ("por las tardes", "es", "mo-su@12:00-17:00",
     "Gracias, le ofreceremos horas: por las tardes."),
])
def test_a_reply_saying_when_they_can_come_is_kept_and_offers_times_inside_it(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, week: list[dict[str, Any]],
        said: str, language: str | None, codes: str, answer: str) -> None:
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"), language=language)
    patient = _patient_of(appt)
    waiting = create(rt, waitlist_appointment(
        patient, [(NOW + timedelta(days=30), NOW + timedelta(days=60))], location=PLACE))
    reply(rt, api_server, ANA, "R")
    first = _open_offer(rt)
    assert _offered(rt) == sorted(_start(s)[0] for s in week)[:3]  # any time, at first

    again = reply(rt, api_server, ANA, said)

    stated = Availability.from_codes(codes)
    expected = _free_inside(rt, week, stated)
    assert len(expected) == 3 and _offered(rt) == expected
    assert all(stated.admits(t, t + timedelta(minutes=30), UTC) for t in _offered(rt))
    assert answer in again
    # The SMS lists the new times, with a link to the new offer's page.
    for when in expected:
        assert format_short(when, language or "en") in again
    assert link_in(again)[1] != ""
    # Kept with the patient's preferences, in a code that reads back to the same windows.
    assert _stored(rt, patient) == codes
    assert Availability.from_codes(codes).to_codes() == codes
    with rt.sessions() as session:
        assert session.get_one(SlotOffer, first.id).state == "replaced"
    # The waitlisted Appointment now says the same, as FHIR R4 says it.
    periods = read(rt, f"Appointment/{waiting['id']}")["requestedPeriod"]
    assert read(rt, f"Appointment/{waiting['id']}")["status"] == "waitlist"
    assert len(periods) >= 30
    window = stated.windows[0]
    for period in periods:
        lo, hi = (datetime.fromisoformat(period[k]).astimezone(UTC) for k in ("start", "end"))
        assert lo >= NOW and lo.time() >= window.start
        assert hi.time() == window.end or (hi.time() == time(0) and hi.date() > lo.date())
    # Recorded as the answer to an offer, not as free text for staff.
    assert _inbound(rt)[-1] == (said, "offer", "when they can come, while choosing a time")
    assert _tasks(rt) == []


def test_the_next_request_for_another_time_offers_only_times_inside_it(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        week: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    reply(rt, api_server, ANA, "R")
    reply(rt, api_server, ANA, "only mornings")
    mornings = Availability.from_codes("mo-su@08:00-12:00")
    chosen = _offered(rt)[1]
    assert "You are booked for" in reply(rt, api_server, ANA, "2")
    assert datetime.fromisoformat(read(rt, f"Appointment/{appt['id']}")["start"]) == chosen

    reply(rt, api_server, ANA, "R")

    offered = _offered(rt)
    assert offered == _free_inside(rt, week, mornings) and chosen not in offered
    assert all(t.time() == time(9) for t in offered)
    rules = [(intent, rule) for _, intent, rule in _inbound(rt)]
    assert rules == [("reschedule", "the step's reply key 'R'"),
                     ("offer", "when they can come, while choosing a time"),
                     ("offer", "option 2 of an offer"),
                     ("reschedule", "the step's reply key 'R'")]


def test_free_text_while_choosing_still_goes_to_staff_and_offer_answers_do_not(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        week: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    reply(rt, api_server, ANA, "R")
    reply(rt, api_server, ANA, "Is there parking near the clinic?")
    reply(rt, api_server, ANA, "7")  # out of range: asked again, no staff
    reply(rt, api_server, ANA, "1")

    intents = [intent for _, intent, _ in _inbound(rt)]
    assert intents == ["reschedule", "text", "offer", "offer"]
    assert len(_tasks(rt)) == 1  # the question, for staff to answer
    # The outcome report reads the appointment as answered by offer replies, with one free
    # text among them (only the question).
    with rt.sessions() as session:
        facts = load_appointments(session, NOW, NOW + timedelta(days=30))
    (mine,) = [f for f in facts if f.reference == f"Appointment/{appt['id']}"]
    assert sorted(r.intent for r in mine.replies) == ["offer", "offer", "reschedule", "text"]


def _page_for(rt: Runtime, api_server: ApiServer) -> str:
    return link_in(reply(rt, api_server, ANA, "R"))[1]


def test_the_offer_page_lets_the_patient_tick_when_they_can_come(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        week: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    path = _page_for(rt, api_server)
    page = read_page(get(api_server, path))
    assert ("can-come", "yes", "Show other times") in page.buttons
    assert "Weekday mornings" in page.body and "Weekends" in page.body

    ticked = post(api_server, path, {"when-weekday-mornings": "yes", "when-weekends": "yes",
                                     "when-nights": "yes", "can-come": "yes"})

    assert ticked.status_code == 303
    new_path, _, query = ticked.headers["location"].partition("?")
    assert new_path != path and query == "after=noted"
    stated = Availability.from_codes("mo-fr@08:00-12:00;sa-su@00:00-24:00")
    assert _stored(rt, _patient_of(appt)) == stated.to_codes()
    expected = _free_inside(rt, week, stated)
    assert _offered(rt) == expected
    again = read_page(get(api_server, ticked.headers["location"]))
    assert again.notices == ["Thank you. These times suit when you said you can come."]
    assert len(again.radios) == len(expected)
    assert read_page(get(api_server, path)).radios == []  # the old times are over
    assert post(api_server, new_path, {"option": "1"}).status_code == 303
    assert datetime.fromisoformat(read(rt, f"Appointment/{appt['id']}")["start"]) == expected[0]


def test_nothing_ticked_asks_again_and_changes_nothing(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        week: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    path = _page_for(rt, api_server)
    before = _offered(rt)

    for form in ({"can-come": "yes"}, {"can-come": "yes", "when-weekends": "on"},
                 {"can-come": "yes", "when-whenever": "yes"}):
        response = post(api_server, path, form)
        assert response.status_code == 422
        assert read_page(response).notices == ["Please tick at least one."]
    assert _stored(rt, _patient_of(appt)) is None
    assert _offered(rt) == before


def test_an_ehr_refusing_the_requested_period_still_keeps_it_and_offers_inside_it(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        week: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing lost and no error for the patient: the availability is kept here, and the new
    times are inside it, when the EHR does not take the waitlisted Appointment's update."""
    appt = book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    patient = _patient_of(appt)
    waiting = create(rt, waitlist_appointment(
        patient, [(NOW + timedelta(days=30), NOW + timedelta(days=60))], location=PLACE))
    reply(rt, api_server, ANA, "R")
    ehr = rt.ehr
    assert ehr is not None
    real_update = ehr.update
    refused: list[str] = []

    def refuse(resource: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if resource.get("status") == "waitlist":
            refused.append(resource["id"])
            raise FhirUnavailable("the EHR is down", status=503)
        return real_update(resource, **kwargs)

    monkeypatch.setattr(ehr, "update", refuse)
    answered = reply(rt, api_server, ANA, "after 5pm")

    assert refused == [waiting["id"]]
    assert "after 5 pm" in answered
    assert _stored(rt, patient) == "mo-su@17:00-24:00"
    assert _offered(rt) and all(t.time() == time(18) for t in _offered(rt))
    assert read(rt, f"Appointment/{waiting['id']}")["requestedPeriod"][0]["start"] == (
        waiting["requestedPeriod"][0]["start"])


def test_a_bare_number_outside_an_offer_is_not_read_as_one(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    book_patient(rt, ANA, make_slot(12, 10, status="busy"))
    reply(rt, api_server, ANA, "2")
    assert _inbound(rt)[-1][1] == "text"

