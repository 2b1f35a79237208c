"""The send-time check on Postgres and the real FHIR server: still wanted, reachable, allowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.sending.checks import Ready, Skip, check, sent_recently
from outreach.store.consent import set_opt_out
from outreach.store.controls import PAUSE_RECHECK
from outreach.store.db import transaction
from outreach.store.models import Enrollment, JourneyControl, ScheduledStep, StepState
from rules import JourneySet, Send
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, instant, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import TwilioServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
START = NOW + timedelta(days=5)
EMAIL = "pat@example.org"
MOBILE = "+15555550123"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
       twilio: TwilioServer, clock: SimulatedClock) -> Runtime:
    return make_runtime(clock=clock, fhir_base_url=fhir.base_url, smtp_host="127.0.0.1",
                        smtp_port=smtp.port, smtp_from="reminders@hospital.example",
                        twilio_account_sid="AC" + "0" * 32,
                        twilio_auth_token="token-0123456789abcdef",
                        twilio_from="+15555550100", twilio_base_url=twilio.base_url)


def _book(rt: Runtime, start: datetime = START, **patient_fields: Any) -> dict[str, Any]:
    """Create the Patient and Appointment in the EHR and ingest the appointment."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(mobile=MOBILE, **patient_fields))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
    ingest(rt, appt, source="test")
    return appt


def _step(rt: Runtime, step_id: str) -> tuple[ScheduledStep, Enrollment]:
    with rt.sessions() as session:
        step = session.scalars(select(ScheduledStep).options(joinedload(ScheduledStep.enrollment))
                               .where(ScheduledStep.step_id == step_id)).one()
    return step, step.enrollment


def _check(rt: Runtime, step_id: str) -> Ready | Skip:
    return check(rt, *_step(rt, step_id))


def _opt_out(rt: Runtime, channel: str, address: str) -> None:
    with transaction(rt.sessions) as session:
        set_opt_out(session, channel, address, True, source="keyword", now=NOW)


def test_ready_names_channel_address_and_the_rendered_message(rt: Runtime) -> None:
    appt = _book(rt)
    step, _ = _step(rt, "booked")

    ready = _check(rt, "booked")

    assert isinstance(ready, Ready)
    assert (ready.channel, ready.to, ready.category) == ("email", EMAIL, "notification")
    assert ready.about == f"Appointment/{appt['id']}"
    assert ready.message.key == step.uid
    assert "Hello Pat" in ready.message.text and "Main Street Clinic" in ready.message.text
    assert "is booked" in (ready.message.subject or "")


def test_a_reminder_goes_by_text_first(rt: Runtime) -> None:
    _book(rt)
    ready = _check(rt, "reminder-72h")
    assert isinstance(ready, Ready)
    assert (ready.channel, ready.to) == ("sms", MOBILE)
    assert ready.message.text.startswith("Reminder: Pat")


def test_cancelled_in_the_ehr_meanwhile_cancels_with_the_fresh_version(rt: Runtime) -> None:
    assert rt.ehr is not None
    appt = _book(rt)
    rt.ehr.update({**appt, "status": "cancelled"})

    skip = _check(rt, "reminder-24h")

    assert isinstance(skip, Skip)
    assert skip.state == StepState.CANCELLED and skip.reason.startswith("cancel_when matched")
    assert skip.fresh is not None and skip.fresh["status"] == "cancelled"


def test_a_moved_start_sends_the_step_back_to_planning(rt: Runtime) -> None:
    assert rt.ehr is not None
    appt = _book(rt)
    moved = START + timedelta(days=1)
    rt.ehr.update({**appt, "start": instant(moved), "end": instant(moved + timedelta(hours=1))})

    skip = _check(rt, "reminder-72h")

    assert isinstance(skip, Skip)
    assert (skip.state, skip.reason) == (StepState.SCHEDULED, "anchor moved")
    assert skip.fresh is not None and skip.fresh["start"] == instant(moved)


def test_ehr_down_retries_later_instead_of_sending_blind(rt: Runtime,
                                                          fhir: FhirTestServer) -> None:
    _book(rt)
    fhir.outage(503)

    skip = _check(rt, "booked")

    assert isinstance(skip, Skip)
    assert skip.state == StepState.SCHEDULED and skip.reason.startswith("EHR unavailable")
    assert skip.retry_at is not None and skip.retry_at > NOW
    assert skip.fresh is None


def test_deleted_in_the_ehr_cancels(rt: Runtime, fhir: FhirTestServer) -> None:
    appt = _book(rt)
    httpx.delete(f"{fhir.base_url}/Appointment/{appt['id']}").raise_for_status()

    skip = _check(rt, "booked")

    assert isinstance(skip, Skip) and skip.state == StepState.CANCELLED
    assert skip.reason == f"Appointment/{appt['id']} no longer exists"


def test_an_opted_out_number_falls_back_to_email(rt: Runtime) -> None:
    _book(rt)
    _opt_out(rt, "sms", MOBILE)

    ready = _check(rt, "reminder-72h")

    assert isinstance(ready, Ready) and (ready.channel, ready.to) == ("email", EMAIL)


def test_opted_out_everywhere_skips_and_says_so(rt: Runtime) -> None:
    _book(rt, email="Pat@Example.org")  # an opt-out matches whatever the case of the address
    _opt_out(rt, "sms", MOBILE)
    _opt_out(rt, "email", EMAIL)

    skip = _check(rt, "reminder-72h")

    assert isinstance(skip, Skip) and skip.state == StepState.SKIPPED
    assert "opted out of email" in skip.reason and "opted out of sms" in skip.reason


def test_a_paused_journey_waits_without_using_an_attempt(rt: Runtime) -> None:
    _book(rt)
    with transaction(rt.sessions) as session:
        session.add(JourneyControl(journey="appointment-reminders", paused=True, changed_at=NOW,
                                   changed_by="staff"))

    skip = _check(rt, "booked")

    assert isinstance(skip, Skip)
    assert (skip.state, skip.reason, skip.counts) == (StepState.SCHEDULED, "journey paused", False)
    assert skip.retry_at == NOW + PAUSE_RECHECK


def test_quiet_hours_in_the_patients_zone_defer_without_using_an_attempt(rt: Runtime) -> None:
    tokyo = [{"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": "Asia/Tokyo"}]
    assert rt.ehr is not None
    pat, _ = rt.ehr.create({**patient(mobile=MOBILE), "extension": tokyo})
    ingest(rt, rt.ehr.create(appointment(f"Patient/{pat['id']}", START))[0], source="test")

    skip = _check(rt, "booked")  # noon UTC is 21:00 in Tokyo

    assert isinstance(skip, Skip)
    assert (skip.state, skip.reason, skip.counts) == (
        StepState.SCHEDULED, "quiet hours: deferred", False)
    assert skip.retry_at == NOW + timedelta(hours=11)  # 08:00 in Tokyo


def test_a_text_sent_today_defers_the_next_text_to_tomorrow(rt: Runtime) -> None:
    _book(rt)
    with transaction(rt.sessions) as session:
        session.execute(update(ScheduledStep).where(ScheduledStep.step_id == "reminder-72h")
                        .values(state=StepState.SENT, sent_at=NOW - timedelta(hours=2),
                                channel="sms"))

    skip = _check(rt, "reminder-24h")

    assert isinstance(skip, Skip)
    assert (skip.state, skip.reason, skip.counts) == (
        StepState.SCHEDULED, "frequency cap: deferred", False)
    assert skip.retry_at == NOW + timedelta(days=1)


def test_a_journey_no_longer_loaded_cancels_its_steps(rt: Runtime) -> None:
    _book(rt)
    rt.journeys = JourneySet([])
    skip = _check(rt, "booked")
    assert isinstance(skip, Skip) and skip.state == StepState.CANCELLED
    assert skip.reason == "journey appointment-reminders is no longer loaded"


def _set(rt: Runtime, step_id: str, **values: Any) -> int:
    with transaction(rt.sessions) as session:
        step = session.scalars(select(ScheduledStep).where(ScheduledStep.step_id == step_id)).one()
        for name, value in values.items():
            setattr(step, name, value)
        return step.id


def test_sent_recently_counts_only_sent_steps_in_the_window(rt: Runtime) -> None:
    _book(rt)
    _set(rt, "booked", state=StepState.SENT, sent_at=NOW - timedelta(hours=1), channel="email")
    _set(rt, "reminder-72h", state=StepState.SENT, sent_at=NOW - timedelta(days=9),
         channel="sms")  # outside the cap window
    excluded = _set(rt, "reminder-2h", state=StepState.SENT, sent_at=NOW, channel="sms")
    _, enrollment = _step(rt, "booked")  # reminder-24h stays scheduled: not counted

    with rt.sessions() as session:
        sends = sent_recently(session, enrollment.patient, NOW, rt.journeys,
                              exclude_step=excluded)
        other = sent_recently(session, "Patient/someone-else", NOW, rt.journeys)

    assert sends == [Send(NOW - timedelta(hours=1), "email", exempt=True)]
    assert other == []
