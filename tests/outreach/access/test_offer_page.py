"""The offer page at /o/{token} on real parts (the FHIR test server's Slots, our API under
uvicorn, Postgres): the link in the options SMS opens the same times in the patient's language,
one choice books it once however often the form is sent, and a stale, forged or misused link, a
time taken meanwhile or a bad form each get a clear page, never a 500 and never a booking."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from channels.dates import format_short, format_when
from outreach.core.clock import SimulatedClock
from outreach.core.links import sign
from outreach.core.ports import Runtime
from outreach.store.models import ScheduledStep, SlotOffer
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
from tests.support.drain import drain
from tests.support.fhir_data import patient, waitlist_appointment

ANA, BEN = "+15555550123", "+15555550124"
UTC_ZONE = ZoneInfo("UTC")
_LINK = re.compile(r"(https?://[^\s/]+)(/o/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22})")
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Page:
    """What a patient (or a screen reader) gets from the HTML."""

    lang: str | None = None
    h1: str = ""
    text: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # role=status / role=alert
    radios: list[tuple[str, str]] = field(default_factory=list)  # (value, label text)
    buttons: list[tuple[str | None, str | None, str]] = field(default_factory=list)

    @property
    def body(self) -> str:
        return " ".join(" ".join(self.text).split())


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._open: list[str] = []  # what the text being read belongs to
        self._radio: str | None = None
        self._button: tuple[str | None, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.page.lang = found.get("lang")
        elif tag == "input" and found.get("type") == "radio":
            self._radio = str(found.get("value"))
            self.page.radios.append((self._radio, ""))
        elif tag == "button":
            self._button = (found.get("name"), found.get("value"))
            self.page.buttons.append((*self._button, ""))
        if tag in ("style", "title", "h1") or found.get("role") in ("status", "alert"):
            self._open.append(tag if tag != "p" else "notice")
            if tag == "p":
                self.page.notices.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == ("notice" if tag == "p" else tag):
            self._open.pop()
        if tag == "label":
            self._radio = None
        elif tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] in ("style", "title"):
            return
        self.page.text.append(data)
        words = " ".join(data.split())
        if self._open and self._open[-1] == "h1":
            self.page.h1 += words
        if self._open and self._open[-1] == "notice":
            self.page.notices[-1] = f"{self.page.notices[-1]} {words}".strip()
        if self._radio is not None and words:
            value, label = self.page.radios[-1]
            self.page.radios[-1] = (value, f"{label} {words}".strip())
        if self._button is not None and words:
            name, value, label = self.page.buttons[-1]
            self.page.buttons[-1] = (name, value, f"{label} {words}".strip())


def read_page(response: httpx.Response) -> Page:
    assert response.headers["content-type"].startswith("text/html"), response.text[:200]
    reader = _Reader()
    reader.feed(response.text)
    return reader.page


def link_in(sms: str) -> tuple[str, str]:
    """(the server, the path /o/<token>) of the link in an SMS we sent."""
    match = _LINK.search(sms)
    assert match is not None, sms
    return match.group(1), match.group(2)


def get(api: ApiServer, path: str) -> httpx.Response:
    return httpx.get(f"{api.url}{path}", timeout=10, follow_redirects=False)


def post(api: ApiServer, path: str, data: dict[str, str] | None = None, *,
         content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if data is not None:
        return httpx.post(f"{api.url}{path}", data=data, timeout=10, follow_redirects=False)
    return httpx.post(f"{api.url}{path}", content=content or b"", headers=headers or FORM,
                      timeout=10, follow_redirects=False)


def starts(rt: Runtime, slots: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(read(rt, f"Slot/{s['id']}")["start"]) for s in slots]


def offer_rows(rt: Runtime) -> list[SlotOffer]:
    with rt.sessions() as session:
        return list(session.scalars(select(SlotOffer).order_by(SlotOffer.id)))


def slot_of(rt: Runtime, appointment: dict[str, Any]) -> str:
    return str(read(rt, f"Appointment/{appointment['id']}")["slot"][0]["reference"])


@pytest.fixture
def three_free(make_slot: SlotMaker) -> list[dict[str, Any]]:
    return [make_slot(2), make_slot(3, 14), make_slot(4)]


def test_the_link_in_the_sms_shows_the_same_times_and_one_choice_books_once(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]]) -> None:
    held = make_slot(5, 10, status="busy")
    appt = book_patient(rt, ANA, held)
    sms = reply(rt, api_server, ANA, "R")
    server, path = link_in(sms)
    assert server == api_server.url
    offered = starts(rt, three_free)
    # The SMS lists the times short; the page lists the same ones, in the same order, in full.
    assert [format_short(s, "en") for s in offered] == re.findall(r"\d\) ([^,]+?\d\d:\d\d)", sms)

    page = read_page(shown := get(api_server, path))
    assert shown.status_code == 200 and page.lang == "en"
    assert page.h1 == "Choose a new time"
    assert page.radios == [(str(n), format_when(s, "en")) for n, s in enumerate(offered, 1)]
    assert shown.headers["cache-control"] == "no-store"

    booked = post(api_server, path, {"option": "2"})
    assert booked.status_code == 303 and booked.headers["location"] == path
    after = read_page(get(api_server, path))
    assert after.h1 == "Your appointment is booked"
    assert after.notices == [f"You are booked for {format_when(offered[1], 'en')}."]
    assert after.radios == [] and after.buttons == []  # nothing left to choose
    assert slot_of(rt, appt) == f"Slot/{three_free[1]['id']}"
    assert read(rt, f"Slot/{three_free[1]['id']}")["status"] == "busy"
    assert read(rt, f"Slot/{held['id']}")["status"] == "free"
    drain(rt)
    with rt.sessions() as session:  # the reminders follow the new time (intake ran)
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "day-before")).all()
    assert max(due) == offered[1] - timedelta(hours=24)

    # A reload, a second tap, another option: nothing is booked again.
    again = post(api_server, path, {"option": "1"})
    assert again.status_code == 303 and again.headers["location"] == path
    assert read_page(get(api_server, path)).notices == after.notices
    assert slot_of(rt, appt) == f"Slot/{three_free[1]['id']}"
    assert read(rt, f"Slot/{three_free[0]['id']}")["status"] == "free"
    (offer,) = offer_rows(rt)
    assert (offer.state, offer.chosen) == ("booked", 2)


def test_a_spanish_speaking_patient_gets_the_page_in_spanish(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, clock: SimulatedClock,
        three_free: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"), language="es")
    sms = reply(rt, api_server, ANA, "R")
    _, path = link_in(sms)
    offered = starts(rt, three_free)

    page = read_page(get(api_server, path))
    assert page.lang == "es" and page.h1 == "Elija una nueva hora"
    assert [label for _, label in page.radios] == [format_when(s, "es") for s in offered]
    assert (None, None, "Reservar esta hora") in page.buttons

    assert post(api_server, path, {"option": "3"}).status_code == 303
    assert read_page(get(api_server, path)).notices == [
        f"Su cita queda reservada para el {format_when(offered[2], 'es')}."]
    assert slot_of(rt, appt) == f"Slot/{three_free[2]['id']}"
    clock.advance(timedelta(hours=3))  # past the link's date: still in Spanish
    expired = read_page(get(api_server, path))
    assert (expired.lang, expired.h1) == ("es", "Este enlace ha caducado")


def test_a_link_past_its_hold_is_gone_and_books_nothing(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, clock: SimulatedClock,
        three_free: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    _, path = link_in(reply(rt, api_server, ANA, "R"))
    clock.advance(timedelta(hours=2, minutes=1))  # the journey holds times for 2 h

    for response in (get(api_server, path), post(api_server, path, {"option": "1"})):
        assert response.status_code == 410
        page = read_page(response)
        assert page.h1 == "This link has expired" and page.radios == []
    assert read(rt, f"Appointment/{appt['id']}")["start"] == appt["start"]
    assert all(read(rt, f"Slot/{s['id']}")["status"] == "free" for s in three_free)


def _tampered(token: str) -> str:
    payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{payload}.{flipped}"


def test_a_forged_tampered_or_misused_link_is_not_found(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]]) -> None:
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    _, path = link_in(reply(rt, api_server, ANA, "R"))
    token = path.removeprefix("/o/")
    (offer,) = offer_rows(rt)
    now = rt.clock.now()
    preference_link = rt.settings.preferences_link(offer.patient, "en", now)
    assert preference_link is not None
    other_secret = sign(b"not our secret" * 3, offer.uid, "en", now, timedelta(hours=1),
                        purpose="offers")
    no_such_offer = rt.settings.offer_link("0" * 32, "en", now, now + timedelta(hours=1))
    assert no_such_offer is not None
    # The preference link's token names the patient and is genuine, but for another purpose;
    # signed for offers, the same subject would still not be an offer of ours.
    as_preferences = sign(b"s" * 40, offer.uid, "en", now, timedelta(hours=1))
    refused = [_tampered(token), token[:-1], "x" * 30, f"{token}x", other_secret, as_preferences,
               preference_link.rsplit("/", 1)[1], no_such_offer.rsplit("/", 1)[1]]

    for bad in refused:
        for response in (get(api_server, f"/o/{bad}"),
                         post(api_server, f"/o/{bad}", {"option": "1"})):
            assert response.status_code == 404, bad
            page = read_page(response)
            assert page.h1 == "This link is not valid" and page.radios == [], bad
    assert read(rt, f"Appointment/{appt['id']}")["start"] == appt["start"]
    assert offer_rows(rt)[0].state == "open"
    assert get(api_server, path).status_code == 200  # the genuine link still works


def test_a_time_taken_meanwhile_says_so_and_offers_the_next_ones(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]]) -> None:
    spare = make_slot(6)
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    _, path = link_in(reply(rt, api_server, ANA, "R"))
    gone = read(rt, f"Slot/{three_free[0]['id']}")
    ehr(rt).update({**gone, "status": "busy"})  # booked by the front desk meanwhile

    taken = post(api_server, path, {"option": "1"})
    assert taken.status_code == 303
    new_path = taken.headers["location"].split("?")[0]
    assert new_path != path and new_path.startswith("/o/")
    page = read_page(get(api_server, taken.headers["location"]))
    assert page.notices == ["Sorry, that time was just taken. Here are the next free times."]
    rest = starts(rt, [*three_free[1:], spare])
    assert [label for _, label in page.radios] == [format_when(s, "en") for s in rest]
    # The old link now says its times are over; the new one books.
    assert read_page(get(api_server, path)).radios == []
    assert post(api_server, new_path, {"option": "1"}).status_code == 303
    assert slot_of(rt, appt) == f"Slot/{three_free[1]['id']}"


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"", FORM, 422),
    (b"option=", FORM, 422),
    (b"option=abc", FORM, 422),
    (b"option=99", FORM, 422),
    (b"option=0", FORM, 422),
    (b"option=-1", FORM, 422),
    (b"option=%C0", FORM, 400),  # not UTF-8
    (b"option=1&option=2", FORM, 400),
    (b"answer=yes", FORM, 422),  # a waitlist answer to a reschedule offer
    (b"option=1&" + b"x" * 20_000, FORM, 413),
    (b'{"option": 1}', {"content-type": "application/json"}, 415),
    (b"--b\r\nContent-Disposition: form-data; name=option\r\n\r\n1\r\n--b--\r\n",
     {"content-type": "multipart/form-data; boundary=b"}, 415),
])
def test_a_bad_form_gets_the_page_back_and_books_nothing(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]], body: bytes, headers: dict[str, str],
        status: int) -> None:
    appt = book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    _, path = link_in(reply(rt, api_server, ANA, "R"))

    response = post(api_server, path, content=body, headers=headers)

    assert response.status_code == status
    page = read_page(response)
    assert page.notices == ["Please choose one of the times."]
    assert [value for value, _ in page.radios] == ["1", "2", "3"]  # choose again, right here
    assert read(rt, f"Appointment/{appt['id']}")["start"] == appt["start"]
    assert offer_rows(rt)[0].state == "open"
    assert post(api_server, path, {"option": "1"}).status_code == 303  # still open


def test_a_body_past_the_request_limit_is_refused_before_it_is_read(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]]) -> None:
    book_patient(rt, ANA, make_slot(5, 10, status="busy"))
    _, path = link_in(reply(rt, api_server, ANA, "R"))
    response = post(api_server, path, content=b"option=1&pad=" + b"x" * 200_000)
    assert response.status_code == 413
    assert offer_rows(rt)[0].state == "open"


def test_the_access_log_holds_no_offer_token(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        three_free: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    book_patient(rt, ANA, make_slot(5, 10, status="busy"), language="es")
    _, path = link_in(reply(rt, api_server, ANA, "R"))
    token = path.removeprefix("/o/")
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    caplog.set_level(logging.DEBUG)

    get(api_server, path)
    post(api_server, path, {"option": "abc"})
    post(api_server, path, {"option": "1"})
    get(api_server, f"{path}?after=taken")

    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) == 4, access
    assert all('/o/…' in line for line in access)
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if not r.name.startswith(("httpx", "httpcore")))
    for private in (token, token.split(".")[0], token.split(".")[1], "5555550123"):
        assert private not in logged, private


# The waitlist: a freed time offered to one waiting patient, answered on the page.

@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    (rules_dir / "waitlist.yaml").write_text(WAITLIST_JOURNEY)
    return rules_dir


def _waitlist_offer(rt: Runtime, make_slot: SlotMaker, language: str | None = None,
                    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A cancellation frees a Slot, a waiting patient is texted it; (the page's path, the
    waitlisted Appointment, the freed Slot)."""
    freed = make_slot(3, 10, status="busy")
    booked = book_patient(rt, BEN, freed)
    pat = create(rt, patient(email=None, mobile=ANA, language=language))
    waiting = create(rt, waitlist_appointment(
        f"Patient/{pat['id']}", [(NOW + timedelta(days=1), NOW + timedelta(days=10))],
        location=PLACE, created=NOW - timedelta(days=20)))
    current = read(rt, f"Appointment/{booked['id']}")
    cancelled = ehr(rt).update({**current, "status": "cancelled"})
    ehr(rt).update({**read(rt, f"Slot/{freed['id']}"), "status": "free"})
    from outreach.intake.ingest import ingest
    ingest(rt, cancelled, source="test")
    drain(rt)
    jobs.sweep(rt)
    drain(rt)
    (offer,) = [o for o in offer_rows(rt) if o.kind == "waitlist"]
    link = rt.settings.offer_link(offer.uid, offer.language, rt.clock.now(), offer.expires_at)
    assert link is not None
    return link_in(link)[1], waiting, freed


def test_a_waitlist_offer_page_asks_yes_or_no_and_yes_books_it(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    path, waiting, freed = _waitlist_offer(rt, make_slot)
    when = format_when(datetime.fromisoformat(freed["start"]), "en")

    page = read_page(get(api_server, path))
    assert page.h1 == "An appointment is free" and page.radios == []
    assert page.buttons == [("answer", "yes", "Yes, book it"),
                            ("answer", "no", "No thanks, keep me on the waiting list")]
    assert when in page.body

    assert post(api_server, path, {"answer": "yes"}).status_code == 303
    assert read_page(get(api_server, path)).notices == [f"You are booked for {when}."]
    now_booked = read(rt, f"Appointment/{waiting['id']}")
    assert now_booked["status"] == "booked"
    assert now_booked["slot"] == [{"reference": f"Slot/{freed['id']}"}]
    assert read(rt, f"Slot/{freed['id']}")["status"] == "busy"
    assert post(api_server, path, {"answer": "yes"}).status_code == 303  # books nothing again


def test_no_on_the_waitlist_page_keeps_the_patient_waiting(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker) -> None:
    path, waiting, freed = _waitlist_offer(rt, make_slot, language="es")
    page = read_page(get(api_server, path))
    assert page.lang == "es" and page.h1 == "Hay una cita libre"

    assert post(api_server, path, {"answer": "maybe"}).status_code == 422
    assert post(api_server, path, {"answer": "no"}).status_code == 303
    after = read_page(get(api_server, path))
    assert after.notices == ["Gracias. Sigue en la lista de espera."]
    assert after.buttons == []
    assert read(rt, f"Appointment/{waiting['id']}")["status"] == "waitlist"
    assert read(rt, f"Slot/{freed['id']}")["status"] == "free"
