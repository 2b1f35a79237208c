"""The offer page in a real headless Chromium (Debian's) on a phone-sized screen, driven by
Playwright against the app under uvicorn and the FHIR test server: a patient opens the link from
the options SMS, taps a time and books it; a waitlisted patient sees YES as the main answer and
NO as the lesser one. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from channels.dates import format_when
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import SlotOffer
from outreach.worker import jobs
from tests.outreach.access.conftest import (
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
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.drain import drain
from tests.support.fhir_data import patient, waitlist_appointment

pytestmark = needs_chromium
ANA, BEN = "+15555550123", "+15555550124"
PHONE = {"width": 390, "height": 844}
TOUCH_TARGET = 44  # px, the smallest comfortable tap target (WCAG 2.5.5, Apple HIG)
_LINK = re.compile(r"https?://\S+/o/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}")


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    (rules_dir / "waitlist.yaml").write_text(WAITLIST_JOURNEY)
    return rules_dir


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                   device_scale_factor=2)
    yield context.new_page()
    context.close()


def _unlabelled(page: Any) -> list[str]:
    return list(page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .filter(e => ![...e.labels].some(l => l.textContent.trim()))
        .map(e => e.outerHTML)"""))


def _small_targets(page: Any) -> list[str]:
    return list(page.evaluate("""(size) => [...document.querySelectorAll('label.choice, button')]
        .filter(e => { const r = e.getBoundingClientRect();
                       return r.height < size || r.width < size; })
        .map(e => e.outerHTML.slice(0, 80))""", TOUCH_TARGET))


def _headings_outside_their_card(page: Any) -> list[str]:
    return list(page.evaluate("""() => [...document.querySelectorAll('fieldset')]
        .filter(f => f.querySelector('legend').getBoundingClientRect().top
                     - f.getBoundingClientRect().top < 8)
        .map(f => f.querySelector('legend').textContent)"""))


def _looks(locator: Any) -> tuple[str, str]:
    """(background colour, text colour) as drawn."""
    return tuple(locator.evaluate(
        "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]"))


def _fits_the_screen(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def _checks(page: Any) -> None:
    assert _unlabelled(page) == []
    assert _small_targets(page) == []
    assert _headings_outside_their_card(page) == []
    _fits_the_screen(page)


def test_a_patient_taps_a_new_time_on_a_phone_and_is_booked(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, phone: Any) -> None:
    free = [make_slot(2), make_slot(3, 14), make_slot(4)]
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    match = _LINK.search(reply(rt, api_server, ANA, "R"))
    assert match is not None
    link = match.group(0)
    when = format_when(datetime.fromisoformat(read(rt, f"Slot/{free[1]['id']}")["start"]), "en")
    page = phone

    response = page.goto(link)

    assert response is not None and response.status == 200
    assert page.get_by_role("heading", level=1).inner_text() == "Choose a new time"
    times = page.get_by_role("group", name="Free times")
    assert times.get_by_role("radio").count() == 3
    assert not any(r.is_checked() for r in times.get_by_role("radio").all())  # no default
    _checks(page)
    book = page.get_by_role("button", name="Book this time")
    other = page.get_by_role("button", name="Show other times")
    assert _looks(book) != _looks(other)  # the lesser choice looks it
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "offer-en.png"), full_page=True)

    page.get_by_text(when, exact=True).tap()  # the label's text takes the tap
    assert page.get_by_role("radio", name=when).is_checked()
    with page.expect_navigation():  # post, then the 303 back to the same link
        book.tap()

    assert page.url == link
    assert page.get_by_role("heading", level=1).inner_text() == "Your appointment is booked"
    assert page.get_by_role("status").inner_text() == f"You are booked for {when}."
    assert page.locator("form, input").count() == 0
    _fits_the_screen(page)
    page.screenshot(path=str(ARTIFACTS / "offer-booked-en.png"), full_page=True)
    assert read(rt, f"Appointment/{appt['id']}")["slot"] == [
        {"reference": f"Slot/{free[1]['id']}"}]


def test_a_waitlisted_patient_sees_yes_first_and_no_as_the_lesser_answer(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, phone: Any) -> None:
    freed = make_slot(3, 10, status="busy")
    booked = book_patient(rt, BEN, freed)
    pat = create(rt, patient(email=None, mobile=ANA, language="es"))
    create(rt, waitlist_appointment(
        f"Patient/{pat['id']}", [(NOW + timedelta(days=1), NOW + timedelta(days=10))],
        location=PLACE, created=NOW - timedelta(days=20)))
    cancelled = ehr(rt).update({**read(rt, f"Appointment/{booked['id']}"), "status": "cancelled"})
    ehr(rt).update({**read(rt, f"Slot/{freed['id']}"), "status": "free"})
    ingest(rt, cancelled, source="test")
    drain(rt)
    jobs.sweep(rt)
    drain(rt)
    with rt.sessions() as session:
        offer = session.scalars(select(SlotOffer).where(SlotOffer.kind == "waitlist")).one()
    link = rt.settings.offer_link(offer.uid, offer.language, rt.clock.now(), offer.expires_at)
    assert link is not None
    page = phone

    assert page.goto(link).status == 200

    assert page.get_by_role("heading", level=1).inner_text() == "Hay una cita libre"
    yes = page.get_by_role("button", name="Sí, reservarla")
    no = page.get_by_role("button", name="No, gracias; sigo en la lista de espera")
    assert _looks(yes) != _looks(no)
    assert _looks(no)[0] == "rgb(255, 255, 255)"  # outlined, not filled
    _checks(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "offer-waitlist-es.png"), full_page=True)

    with page.expect_navigation():
        no.tap()
    assert page.url == link
    assert page.get_by_role("status").inner_text() == "Gracias. Sigue en la lista de espera."
    page.screenshot(path=str(ARTIFACTS / "offer-waitlist-declined-es.png"), full_page=True)


def test_a_time_taken_meanwhile_leads_to_the_next_times_on_a_phone(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, phone: Any) -> None:
    free = [make_slot(2), make_slot(3, 14), make_slot(4), make_slot(6, 15)]
    book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    match = _LINK.search(reply(rt, api_server, ANA, "R"))
    assert match is not None
    page = phone
    page.goto(match.group(0))
    first = read(rt, f"Slot/{free[0]['id']}")
    ehr(rt).update({**first, "status": "busy"})  # the front desk books it meanwhile

    page.get_by_role("radio").first.tap()
    with page.expect_navigation():
        page.get_by_role("button", name="Book this time").tap()

    assert page.url != match.group(0)
    assert page.get_by_role("status").inner_text() == (
        "Sorry, that time was just taken. Here are the next free times.")
    assert page.get_by_role("radio").count() == 3
    _checks(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "offer-taken-en.png"), full_page=True)
