"""Two-way SMS on real parts: Twilio-shaped API server, our API under uvicorn, Postgres, the
FHIR server. Webhooks are signed exactly as Twilio signs them, over our public URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connector.client import FhirClient
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import (
    ContactConsent,
    DeliveryAttempt,
    EarlyStatus,
    InboundMessage,
    ScheduledStep,
    StepState,
)
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_REMINDERS
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
    status_callback,
)

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
CLINIC = "+15555550100"
MOBILE = "+15555550123"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       smtp: SmtpServer, clock: SimulatedClock, api_server: ApiServer, tmp_path: Path) -> Runtime:
    (tmp_path / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    return make_runtime(
        rules_dir=tmp_path, clock=clock, fhir_base_url=fhir.base_url, public_url=api_server.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_from="reminders@hospital.example",
        organization_name="St Example",
    )


def _fhir(rt: Runtime) -> FhirClient:
    assert rt.ehr is not None
    return rt.ehr


def _book(rt: Runtime, days: float = 5, **patient_fields: Any) -> dict[str, Any]:
    fields = {"email": None, "mobile": MOBILE, **patient_fields}
    pat, _ = _fhir(rt).create(patient(**fields))
    appt, _ = _fhir(rt).create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=days)))
    ingest(rt, appt, source="test")
    return appt


def _due_at(rt: Runtime, step_id: str) -> datetime:
    with rt.sessions() as session:
        return session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == step_id)).one()


def _reply(rt: Runtime, api: ApiServer, body: str, from_: str = MOBILE,
           params: dict[str, str] | None = None) -> str:
    form = params or inbound_params(from_, CLINIC, body)
    response = signed_post(f"{api.url}/channels/twilio/inbound", form)
    assert response.status_code == 200, response.text
    drain(rt)
    return response.text


def _search(rt: Runtime, rtype: str) -> list[dict[str, Any]]:
    return list(_fhir(rt).search(rtype, {"_count": 100}))


def test_booking_confirmation_goes_out_by_sms_and_is_written_back(
    rt: Runtime, twilio: TwilioServer, api_server: ApiServer
) -> None:
    appt = _book(rt)
    assert [o.state for o in drain(rt)] == [StepState.SENT]
    (request,) = twilio.state.requests
    assert request["To"] == MOBILE and request["From"] == CLINIC
    assert "Reply STOP to opt out" in request["Body"]
    assert request["StatusCallback"] == f"{api_server.url}/channels/twilio/status"
    (communication,) = _search(rt, "Communication")
    assert communication["medium"][0]["text"] == "SMS"
    assert communication["about"] == [{"reference": f"Appointment/{appt['id']}"}]
    with rt.sessions() as session:
        attempt = session.scalars(select(DeliveryAttempt)).one()
    assert attempt.provider_message_id == twilio.messages[0]["sid"]


def test_429_and_500_then_201_is_one_message(rt: Runtime, twilio: TwilioServer,
                                              clock: SimulatedClock) -> None:
    twilio.fail_next((429, 20429), (500, 20500))
    _book(rt)
    for _ in range(3):
        drain(rt)
        due = _due_at(rt, "booked")
        clock.set(due)
        jobs.sweep(rt)
    drain(rt)
    assert len(twilio.state.requests) == 3 and len(twilio.messages) == 1
    with rt.sessions() as session:
        states = list(session.scalars(select(DeliveryAttempt.state).order_by(DeliveryAttempt.id)))
    assert states == ["failed", "failed", "sent"]


def test_invalid_number_is_not_retried_and_falls_back_to_email(
    rt: Runtime, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    _book(rt, email="pat@example.org")
    outcomes = drain(rt)  # the booking confirmation lists email first
    assert [(o.state, o.channel) for o in outcomes] == [(StepState.SENT, "email")]
    twilio.fail_next((400, 21211))  # the reminder lists SMS first: Twilio refuses the number
    with rt.sessions() as session:
        reminder = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "reminder-72h")).one()
        due = reminder.due_at
    rt.clock.set(due)  # type: ignore[attr-defined]
    jobs.sweep(rt)
    states = [(o.state, o.channel) for o in drain(rt)]
    assert states == [(StepState.QUEUED, None), (StepState.SENT, "email")]
    assert len(twilio.state.requests) == 1 and twilio.messages == []
    with rt.sessions() as session:
        failed = session.scalars(select(DeliveryAttempt).where(
            DeliveryAttempt.channel == "sms")).one()
    assert (failed.state, failed.error_code) == ("failed", "21211")
    assert len(smtp.messages) == 2


def test_forged_inbound_webhook_is_403_and_nothing_is_recorded(
    rt: Runtime, api_server: ApiServer
) -> None:
    form = inbound_params(MOBILE, CLINIC, "STOP")
    url = f"{api_server.url}/channels/twilio/inbound"
    assert signed_post(url, form, token="not-the-auth-token").status_code == 403
    assert signed_post(url, form, signature="").status_code == 403
    tampered = {**form, "Body": "START"}
    good = signed_post(url, form, signature=None)  # signed for STOP...
    assert good.status_code == 200
    assert signed_post(url, tampered, signature=_signature_of(url, form)).status_code == 403
    with rt.sessions() as session:
        assert session.scalar(select(func.count(InboundMessage.id))) == 1


def _signature_of(url: str, form: dict[str, str]) -> str:
    from channels.signatures import twilio_signature

    return twilio_signature(AUTH_TOKEN, url, form)


def test_stop_is_honoured_before_a_step_due_in_the_same_second(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    _book(rt, days=2.5)  # booked now; the 24 h reminder is due later
    drain(rt)
    assert len(twilio.messages) == 1
    due = _due_at(rt, "reminder-24h")
    rt.clock.set(due)  # type: ignore[attr-defined]
    jobs.sweep(rt)  # the reminder is queued: due this very second
    answer = _reply(rt, api_server, "Stop")
    assert "no more text messages" in answer
    assert "Reply START" in answer
    assert "<Response/>" in _reply(rt, api_server, "STOP")  # one confirmation only
    assert len(twilio.messages) == 1  # the queued reminder was not sent
    with rt.sessions() as session:
        reminder = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "reminder-24h")).one()
        assert reminder.state == StepState.SKIPPED and "opted out of sms" in reminder.reason
        assert session.scalars(select(ContactConsent.opted_out)).one() is True
    assert "again" in _reply(rt, api_server, "START")
    with rt.sessions() as session:
        assert session.scalars(select(ContactConsent.opted_out)).one() is False


@pytest.mark.parametrize("word", ["STOPALL", "unsubscribe", "Cancel", "END", "quit", "REVOKE",
                                  "OPTOUT"])
def test_every_opt_out_word_opts_out(rt: Runtime, api_server: ApiServer, word: str) -> None:
    _reply(rt, api_server, word)
    with rt.sessions() as session:
        assert session.scalars(select(ContactConsent.opted_out)).one() is True


def test_confirm_reply_accepts_the_appointment_in_the_ehr(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock
) -> None:
    appt = _book(rt, days=5)
    drain(rt)
    due = _due_at(rt, "reminder-72h")
    clock.set(due)
    jobs.sweep(rt)
    drain(rt)
    answer = _reply(rt, api_server, " c ")
    assert "confirmed" in answer
    stored = _fhir(rt).read("Appointment", appt["id"])
    patient_ref = next(p for p in stored["participant"]
                       if p["actor"]["reference"].startswith("Patient/"))
    assert patient_ref["status"] == "accepted"
    assert stored["meta"]["versionId"] != appt["meta"]["versionId"]
    replies = [c for c in _search(rt, "Communication") if "inResponseTo" in c]
    assert len(replies) == 1
    assert replies[0]["payload"][0]["contentString"] == " c "
    assert replies[0]["sender"]["reference"].startswith("Patient/")


def test_free_text_and_cancel_replies_become_tasks_for_staff(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock
) -> None:
    _book(rt, days=5)
    drain(rt)
    due = _due_at(rt, "reminder-72h")
    clock.set(due)
    jobs.sweep(rt)
    drain(rt)
    assert "<Response/>" in _reply(rt, api_server, "Can I bring my daughter?")
    assert "asked the clinic to cancel" in _reply(rt, api_server, "X")
    tasks = _search(rt, "Task")
    assert len(tasks) == 2
    assert {t["status"] for t in tasks} == {"requested"}
    assert all(t["for"]["reference"].startswith("Patient/") for t in tasks)
    assert {t["owner"]["reference"] for t in tasks} == {"Organization/front-desk"}
    assert any("cancel" in t["description"] for t in tasks)


def test_the_same_inbound_message_twice_is_recorded_once(
    rt: Runtime, api_server: ApiServer
) -> None:
    form = inbound_params(MOBILE, CLINIC, "hello?")
    _reply(rt, api_server, "", params=form)
    _reply(rt, api_server, "", params=form)
    with rt.sessions() as session:
        assert session.scalar(select(func.count(InboundMessage.id))) == 1
    assert len(_search(rt, "Task")) == 1


def test_status_callbacks_move_forward_only_and_update_the_communication(
    rt: Runtime, twilio: TwilioServer
) -> None:
    _book(rt)
    drain(rt)
    (message,) = twilio.messages
    assert twilio.status_callback(message, "sent").status_code == 204
    assert twilio.status_callback(message, "undelivered", "30003").status_code == 204
    assert twilio.status_callback(message, "sent").status_code == 204  # late, out of order
    assert twilio.status_callback(message, "queued").status_code == 204  # duplicate, older
    drain(rt)
    with rt.sessions() as session:
        attempt = session.scalars(select(DeliveryAttempt)).one()
    assert (attempt.provider_status, attempt.error_code) == ("undelivered", "30003")
    (communication,) = _search(rt, "Communication")
    assert communication["status"] == "not-done"
    assert communication["statusReason"]["text"] == "undelivered (provider error 30003)"



def test_a_status_that_comes_before_the_send_is_recorded_is_kept_and_applied(
    rt: Runtime, twilio: TwilioServer
) -> None:
    """Twilio's callback can beat its own API answer to us: the status waits for the send."""
    twilio.state.callback_first = "undelivered"
    _book(rt)
    drain(rt)
    with rt.sessions() as session:
        attempt = session.scalars(select(DeliveryAttempt)).one()
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 0
    assert attempt.provider_status == "undelivered"
    (communication,) = _search(rt, "Communication")
    assert communication["status"] == "not-done"


def test_a_status_for_a_message_that_never_comes_is_dropped_after_a_day(
    rt: Runtime, clock: SimulatedClock, api_server: ApiServer
) -> None:
    message = {"sid": "SM" + "0" * 32, "to": MOBILE, "from": CLINIC,
               "status_callback": f"{api_server.url}/channels/twilio/status"}
    assert status_callback(message, "delivered").status_code == 204
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 1
    clock.advance(timedelta(days=1, minutes=1))
    jobs.sweep(rt)
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 0


SURVEY = """
journey: sms-survey
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: trigger
steps:
  - id: survey
    at: immediately
    channel: [sms]
    template: satisfaction-survey
    survey: {min: 1, max: 5, low_at_most: 2, recovery_template: service-recovery,
             recovery_task: "Call the patient back within one business day."}
"""


def test_a_low_survey_score_is_recorded_and_starts_service_recovery(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
    api_server: ApiServer, tmp_path: Path,
) -> None:
    (tmp_path / "sms-survey.yaml").write_text(SURVEY)
    rt = make_runtime(
        rules_dir=tmp_path, fhir_base_url=fhir.base_url, public_url=api_server.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100)
    _book(rt, given="Rosa")
    assert [o.state for o in drain(rt)] == [StepState.SENT]
    answer = _reply(rt, api_server, "2")
    assert "Rosa" in answer  # the journey's service-recovery message, straight back
    (response,) = _search(rt, "QuestionnaireResponse")
    assert response["item"][0]["answer"] == [{"valueInteger": 2}]
    assert response["subject"]["reference"].startswith("Patient/")
    (task,) = _search(rt, "Task")
    assert task["priority"] == "urgent"
    assert task["description"].startswith("Call the patient back within one business day.")
    _reply(rt, api_server, "7")  # outside the survey's 1-5: read as free text
    assert len(_search(rt, "QuestionnaireResponse")) == 1 and len(_search(rt, "Task")) == 2
