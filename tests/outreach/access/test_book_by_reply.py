"""A recall books a new appointment by reply: B (or "yes") to "time to book your check-up"
offers times like the last visit's (its practitioner and location) inside the patient's stated
availability; the number creates a booked Appointment in the Slot, which is then busy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import Enrollment, SlotOffer
from tests.outreach.access.conftest import (
    DOCTOR,
    NOW,
    PLACE,
    SlotMaker,
    create,
    ehr,
    read,
    reply,
)
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import instant, patient

MOBILE = "+15555550141"
FOLLOW_UP = """
journey: follow-up
trigger:
  resource: Encounter
  on: [{status: {to: finished}}]
anchor: period.end
steps:
  - {id: book, at: immediately, channel: sms, template: annual-recall, replies: {B: book}}
reschedule: {options: 2, lead_time: 1d, horizon: 30d, hold: 1d}
"""


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    (rules_dir / "follow-up.yaml").write_text(FOLLOW_UP)
    return rules_dir


def _visit(rt: Runtime) -> dict[str, Any]:
    pat = create(rt, patient(email=None, mobile=MOBILE))
    visit = create(rt, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pat['id']}"},
        "participant": [{"individual": {"reference": DOCTOR}}],
        "location": [{"location": {"reference": PLACE}}],
        "period": {"start": instant(NOW - timedelta(hours=1)), "end": instant(NOW)},
    })
    ingest(rt, visit, source="test")
    drain(rt)
    return visit


@pytest.mark.parametrize("answer", ["B", "yes"])
def test_b_offers_times_like_the_visit_and_a_number_books_a_new_appointment(
        rt: Runtime, api_server: ApiServer, make_slot: SlotMaker, answer: str) -> None:
    first, second = make_slot(2), make_slot(3)
    visit = _visit(rt)
    offered = reply(rt, api_server, MOBILE, answer)
    assert "1) " in offered and "2) " in offered and "3) " not in offered
    assert "You are booked for" in reply(rt, api_server, MOBILE, "2")
    (booked,) = [a for a in ehr(rt).search("Appointment", {"_count": 20})
                 if a.get("status") == "booked"]
    assert booked["slot"] == [{"reference": f"Slot/{second['id']}"}]
    assert {p["actor"]["reference"] for p in booked["participant"]} == {
        visit["subject"]["reference"], DOCTOR, PLACE}
    assert read(rt, f"Slot/{second['id']}")["status"] == "busy"
    assert read(rt, f"Slot/{first['id']}")["status"] == "free"
    with rt.sessions() as session:
        assert session.scalars(select(SlotOffer.kind)).one() == "book"
        # The new appointment gets its own reminders.
        assert session.scalars(select(Enrollment.resource_id).where(
            Enrollment.journey == "booked")).one() == booked["id"]
