"""The access loop on real parts: the FHIR test server's Schedules and Slots, the Twilio-shaped
API, our API under uvicorn (webhooks signed as Twilio signs them), Postgres."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.client import FhirClient
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import booked_appointment, patient, schedule, slot
from tests.support.fhir_server import FhirTestServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

# Midday UTC on a weekday, two weeks out of any DST change: times in tests read the same.
NOW = (datetime.now(UTC) + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
CLINIC = "+15555550100"
DOCTOR, PLACE = "Practitioner/dr-ada", "Location/main"

RESCHEDULE_JOURNEY = """
journey: booked
trigger:
  resource: Appointment
  on: [created, updated]
  when: "status = 'booked' and start > now()"
cancel_when: "status in ('cancelled' | 'noshow' | 'entered-in-error')"
replan_on_change: [start]
steps:
  - {id: booked, at: immediately, channel: sms, template: appointment-reminder,
     replies: {C: confirm, R: reschedule}}
  - {id: day-before, at: -24h, channel: sms, template: appointment-reminder,
     replies: {C: confirm, R: reschedule}}
reschedule: {options: 3, lead_time: 1d, horizon: 20d, hold: 2h}
"""

WAITLIST_JOURNEY = (Path(__file__).parents[3] / "rules/journeys/library/waitlist-backfill.yaml"
                    ).read_text()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "booked.yaml").write_text(RESCHEDULE_JOURNEY)
    return folder


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       clock: SimulatedClock, api_server: ApiServer, rules_dir: Path) -> Runtime:
    return make_runtime(
        rules_dir=rules_dir, clock=clock, fhir_base_url=fhir.base_url,
        public_url=api_server.url, twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC, twilio_base_url=twilio.base_url,
        sms_rate_per_second=100, organization_name="St Example", timezone="UTC",
        preferences_secret="s" * 40)


def ehr(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def create(rt: Runtime, resource: dict[str, Any]) -> dict[str, Any]:
    created, _ = ehr(rt).create(resource)
    return created


def read(rt: Runtime, reference: str) -> dict[str, Any]:
    rtype, rid = reference.split("/")
    return ehr(rt).read(rtype, rid)


@pytest.fixture
def clinic_schedule(rt: Runtime) -> str:
    made = create(rt, schedule(DOCTOR, PLACE))
    return f"Schedule/{made['id']}"


SlotMaker = Callable[..., dict[str, Any]]


@pytest.fixture
def make_slot(rt: Runtime, clinic_schedule: str) -> SlotMaker:
    def make(days: float, hour: int = 9, status: str = "free") -> dict[str, Any]:
        start = (NOW + timedelta(days=days)).replace(hour=hour, minute=0)
        return create(rt, slot(clinic_schedule, start, status=status))
    return make


def book_patient(rt: Runtime, mobile: str, in_slot: dict[str, Any],
                 language: str | None = None) -> dict[str, Any]:
    """A patient booked into a (busy) Slot, ingested as the EHR's notification would be."""
    pat = create(rt, patient(email=None, mobile=mobile, language=language))
    appt = create(rt, booked_appointment(f"Patient/{pat['id']}", in_slot, practitioner=DOCTOR,
                                         location=PLACE))
    ingest(rt, appt, source="test")
    drain(rt)
    return appt


def reply(rt: Runtime, api: ApiServer, from_: str, body: str) -> str:
    """The patient's SMS through our webhook; returns the text we answered (TwiML)."""
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(from_, CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)
    return response.text
