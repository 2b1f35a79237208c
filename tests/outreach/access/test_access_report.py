"""The outcome report counts what the access loop did, exactly: offers, bookings, expiries, the
days patients gained, and the cancellations filled from the waitlist."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.reports.render import as_table
from outreach.reports.service import outcome_report, period
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


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    (rules_dir / "waitlist.yaml").write_text(WAITLIST_JOURNEY)
    return rules_dir


def test_the_report_shows_offers_bookings_and_days_gained(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker,
        clock: SimulatedClock) -> None:
    # Ana moves from day 9 to day 2: seven days sooner. Ben lets his options expire.
    make_slot(2)
    make_slot(4)
    book_patient(rt, "+15555550131", make_slot(9, 10, status="busy"))
    book_patient(rt, "+15555550132", make_slot(9, 11, status="busy"))
    reply(rt, api_server, "+15555550131", "R")
    reply(rt, api_server, "+15555550132", "R")
    assert "You are booked" in reply(rt, api_server, "+15555550131", "1")
    # Chloe cancels day 6; Dan, waiting for a day-12 appointment, takes it: six days sooner.
    chloe = book_patient(rt, "+15555550133", make_slot(6, 10, status="busy"))
    dan = create(rt, patient(email=None, mobile="+15555550134"))
    waiting = waitlist_appointment(f"Patient/{dan['id']}",
                                   [(NOW, NOW + timedelta(days=14))], location=PLACE)
    waiting["start"] = (NOW + timedelta(days=12)).isoformat()
    waiting["end"] = (NOW + timedelta(days=12, minutes=30)).isoformat()
    create(rt, waiting)
    cancelled = ehr(rt).update({**read(rt, f"Appointment/{chloe['id']}"), "status": "cancelled"})
    ehr(rt).update({**read(rt, chloe["slot"][0]["reference"]), "status": "free"})
    ingest(rt, cancelled, source="test")
    jobs.sweep(rt)
    drain(rt)
    assert "You are booked" in reply(rt, api_server, "+15555550134", "yes")
    clock.advance(timedelta(hours=3))

    today = NOW.date()
    access = outcome_report(rt, period(today, today))["access"]
    assert (access["reschedule"]["offers"], access["reschedule"]["booked"],
            access["reschedule"]["expired"]) == (2, 1, 1)  # Ben's is past its hold, unanswered
    assert access["reschedule"]["moved_sooner"] == 1
    assert access["reschedule"]["days_gained_total"] == pytest.approx(7.0, abs=0.1)
    assert (access["waitlist"]["offers"], access["waitlist"]["booked"]) == (1, 1)
    assert access["waitlist"]["days_gained_total"] == pytest.approx(6.0, abs=0.1)
    assert access["backfills"] == {"freed": 1, "filled": 1, "open": 0, "unfilled": 0,
                                   "fill_rate": 1.0}
    table = as_table(outcome_report(rt, period(today, today)))
    assert "cancellations backfilled: 1 of 1" in table
    assert "new times offered by reply: 2 offers to 2 patients, 1 booked" in table
