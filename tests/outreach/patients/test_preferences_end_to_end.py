"""The preference page end to end on real parts (Postgres, the FHIR server, SMTP, the
Twilio-shaped API): the link arrives in a message, the patient's choices are written back to the
EHR and accepted there, and the next messages follow them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connector.consent import OUTREACH_CATEGORY
from outreach.api.app import create_app
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.sending.send import SendOutcome
from outreach.store.models import ScheduledStep, StepState, Writeback
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_REMINDERS
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
START = NOW + timedelta(days=5)
PUBLIC = "https://outreach.example.org"
EMAIL, MOBILE, CLINIC = "pat@example.org", "+15555550123", "+15555550100"
LINK = re.compile(re.escape(PUBLIC) + r"/p/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# A one-question survey two hours after the booking, on the same Appointment.
SURVEY = """
journey: visit-survey
consent_category: surveys
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: trigger
steps:
  - id: survey
    at: +2h
    channel: [sms]
    template: satisfaction-survey
    survey: {min: 1, max: 5, low_at_most: 2, recovery_template: service-recovery,
             recovery_task: "Call the patient back within one business day."}
"""
EVERYTHING = {"channel": "any", "receive-appointments": "yes", "receive-surveys": "yes",
              "receive-campaigns": "yes", "quiet_from": "", "quiet_to": ""}


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
       twilio: TwilioServer, clock: SimulatedClock, tmp_path: Path) -> Runtime:
    (tmp_path / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    (tmp_path / "visit-survey.yaml").write_text(SURVEY)
    return make_runtime(
        rules_dir=tmp_path, clock=clock, fhir_base_url=fhir.base_url, public_url=PUBLIC,
        preferences_secret="x" * 40, smtp_host="127.0.0.1", smtp_port=smtp.port,
        smtp_from="reminders@hospital.example", twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC, twilio_base_url=twilio.base_url,
        sms_rate_per_second=100, organization_name="St Example")


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app(), follow_redirects=False)


def _book(rt: Runtime, smtp: SmtpServer, **patient_fields: Any) -> str:
    """Book a visit; the booking email goes out at once. Returns the link in its footer."""
    assert rt.ehr is not None
    fields = {"email": EMAIL, "mobile": MOBILE, **patient_fields}
    pat, _ = rt.ehr.create(patient(**fields))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", START))
    ingest(rt, appt, source="test")
    (booked,) = [o for o in drain(rt) if o.state == StepState.SENT]
    assert (booked.channel, booked.to) == ("email", EMAIL)
    (mail,) = smtp.messages
    body = mail.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found is not None, "the booking email carries the preference link"
    return found.group(0)


def _choose(client: TestClient, link: str, **form: str) -> None:
    chosen = {**EVERYTHING, **form}
    response = client.post(link.removeprefix(PUBLIC),
                           data={k: v for k, v in chosen.items() if v != "off"})
    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith("?saved=yes")


def _run(rt: Runtime, clock: SimulatedClock, step_id: str) -> SendOutcome:
    """Let time reach the step, then do what beat and the workers do."""
    with rt.sessions() as session:
        step = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == step_id)).one()
    clock.set(step.due_at)
    jobs.sweep(rt)
    (outcome,) = [o for o in drain(rt) if o.step_id == step.id]
    return outcome


def _outbox(rt: Runtime) -> list[Writeback]:
    with rt.sessions() as session:
        return list(session.scalars(select(Writeback).where(
            Writeback.resource_type.in_(["Consent", "Communication"]),
            Writeback.step_id.is_(None)).order_by(Writeback.id)))


def _category(consent: dict[str, Any]) -> str:
    (code,) = [c["code"] for concept in consent["category"] for c in concept.get("coding", [])
               if c.get("system") == OUTREACH_CATEGORY]
    return str(code)


def test_the_choices_are_written_to_the_ehr_and_accepted(
    rt: Runtime, client: TestClient, smtp: SmtpServer
) -> None:
    link = _book(rt, smtp)
    assert rt.ehr is not None
    before = {r.id for r in _outbox(rt)}

    _choose(client, link, language="es", channel="email", quiet_from="21:00", quiet_to="08:00",
            **{"receive-surveys": "off", "receive-campaigns": "off"})
    drain(rt)  # the write-back jobs the page queued

    rows = [r for r in _outbox(rt) if r.id not in before]
    assert sorted(r.resource_type for r in rows) == ["Communication", "Consent", "Consent"]
    assert all(r.state == "done" and r.server_id for r in rows), [
        (r.resource_type, r.state, r.last_error) for r in rows]
    written = {r.server_id: rt.ehr.read(r.resource_type, str(r.server_id)) for r in rows}
    consents = [c for c in written.values() if c["resourceType"] == "Consent"]
    patient_ref = consents[0]["patient"]["reference"]
    assert sorted(_category(c) for c in consents) == ["campaigns", "surveys"]
    for consent in consents:
        assert consent["status"] == "active"
        assert consent["patient"]["reference"] == patient_ref
        assert consent["provision"]["type"] == "deny"
        assert consent["policyRule"]["coding"][0]["code"] == "OPTOUT"
    (note,) = [c for c in written.values() if c["resourceType"] == "Communication"]
    assert note["subject"]["reference"] == patient_ref and note["status"] == "completed"
    said = note["payload"][0]["contentString"]
    assert "language: not set → es" in said and "preferred channel: not set → email" in said
    # The EHR finds them as the patient's own: what the send-time check reads back.
    found = rt.ehr.search("Consent", {"patient": patient_ref})
    assert len(list(found)) == 2

    _choose(client, link, language="es", channel="email", quiet_from="21:00",
            quiet_to="08:00", **{"receive-campaigns": "off"})  # surveys back on
    drain(rt)

    (opt_in,) = [r for r in _outbox(rt) if r.id not in before and r.id not in {
        row.id for row in rows}]
    assert opt_in.state == "done"
    back = rt.ehr.read("Consent", str(opt_in.server_id))
    assert _category(back) == "surveys" and back["provision"]["type"] == "permit"
    assert back["policyRule"]["coding"][0]["code"] == "OPTIN"


def test_surveys_turned_off_skips_the_survey_but_not_the_reminder(
    rt: Runtime, client: TestClient, smtp: SmtpServer, twilio: TwilioServer,
    clock: SimulatedClock,
) -> None:
    link = _book(rt, smtp)
    _choose(client, link, language="en", **{"receive-surveys": "off"})

    reminder = _run(rt, clock, "reminder-72h")
    survey = _run(rt, clock, "survey")  # planned after the reminders (the frequency caps)

    assert (reminder.state, reminder.channel, reminder.to) == (StepState.SENT, "sms", MOBILE)
    assert twilio.messages[0]["body"].startswith("Reminder: Pat")
    assert (survey.state, survey.reason) == (StepState.SKIPPED, "patient opted out of surveys")
    assert not any("how was your visit" in m["body"] for m in twilio.messages)


def test_without_the_opt_out_the_survey_goes(
    rt: Runtime, smtp: SmtpServer, twilio: TwilioServer, clock: SimulatedClock,
) -> None:
    """The control for the test above: the same survey to a patient who kept surveys on."""
    _book(rt, smtp)
    survey = _run(rt, clock, "survey")
    assert (survey.state, survey.channel) == (StepState.SENT, "sms")
    assert "how was your visit" in twilio.messages[-1]["body"]


def test_email_first_sends_a_text_first_step_by_email(
    rt: Runtime, client: TestClient, smtp: SmtpServer, twilio: TwilioServer,
    clock: SimulatedClock,
) -> None:
    link = _book(rt, smtp)
    _choose(client, link, language="en", channel="email")

    reminder = _run(rt, clock, "reminder-72h")  # the journey says [sms, email]

    assert (reminder.state, reminder.channel, reminder.to) == (StepState.SENT, "email", EMAIL)
    assert twilio.messages == []
    reminder_mail = smtp.messages[-1]
    assert reminder_mail["To"] == EMAIL
    assert str(reminder_mail["Subject"]).startswith("Reminder: your appointment")


def test_spanish_chosen_on_the_page_sends_the_spanish_text(
    rt: Runtime, client: TestClient, smtp: SmtpServer, twilio: TwilioServer,
    clock: SimulatedClock,
) -> None:
    link = _book(rt, smtp, language="en")  # the EHR says English
    _choose(client, link, language="es")

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    (sms,) = twilio.messages
    assert sms["body"].startswith("Recordatorio: Pat, su cita es el")
    assert "Responda STOP" in sms["body"]


def test_the_patients_quiet_hours_defer_the_reminder(
    rt: Runtime, client: TestClient, smtp: SmtpServer, twilio: TwilioServer,
    clock: SimulatedClock,
) -> None:
    link = _book(rt, smtp)  # the patient's zone: the service's, UTC
    _choose(client, link, language="en", quiet_from="11:00", quiet_to="13:30")

    deferred = _run(rt, clock, "reminder-72h")  # due at 12:00

    assert (deferred.state, deferred.reason) == (StepState.SCHEDULED, "quiet hours: deferred")
    assert twilio.messages == []
    with rt.sessions() as session:
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "reminder-72h")).one()
    assert due == START - timedelta(hours=72) + timedelta(hours=1, minutes=30)
    assert _run(rt, clock, "reminder-72h").state == StepState.SENT
