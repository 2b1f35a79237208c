"""Outreach choices recorded in the EHR, by us or by another system, hold back the next message:
read with the Patient in one request at send time, on the real FHIR server, Postgres, the
Twilio-shaped server and SMTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import rules
from connector.client import FhirClient
from connector.consent import CONTACT_EXTENSION, OUTREACH_CATEGORY
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, instant, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
START = NOW + timedelta(days=5)  # reminder-72h is due in two days, at noon
CLINIC = "+15555550100"
MOBILE = "+15555550123"
NATIONAL = "(555) 555-0123"  # the same number, as a US registration desk writes it
EMAIL = "pat@example.org"
PORTAL = "https://portal.example.org/fhir/consent-id"  # the other system's identifier system
JOURNEYS = Path(rules.__file__).parent / "journeys"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def settings(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
             twilio: TwilioServer, tmp_path: Path) -> dict[str, Any]:
    """The shipped appointment reminders and satisfaction survey, SMS and email on real parts."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(JOURNEYS / "appointment-reminders.yaml", rules_dir)
    shutil.copy(JOURNEYS / "library" / "satisfaction-survey.yaml", rules_dir)
    return {"rules_dir": rules_dir, "fhir_base_url": fhir.base_url, "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port, "smtp_from": "reminders@hospital.example",
            "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
            "twilio_from": CLINIC, "twilio_base_url": twilio.base_url,
            "sms_rate_per_second": 100,
            "cap_per_week": 10}  # the planned reminders would push the survey a week out


@pytest.fixture
def rt(make_runtime: RuntimeFactory, settings: dict[str, Any],
       clock: SimulatedClock) -> Runtime:
    return make_runtime(clock=clock, **settings)


@pytest.fixture
def portal(fhir: FhirTestServer) -> Iterator[FhirClient]:
    """Another system with its own connection to the EHR (a patient portal)."""
    with FhirClient(fhir.base_url) as client:
        yield client


def portal_consent(patient_ref: str, *, category: str | None = "all", deny: bool = True,
                   channel: str | None = "sms", address: str | None = MOBILE,
                   at: datetime = NOW - timedelta(days=1), scope: str = "patient-privacy",
                   ) -> dict[str, Any]:
    """A Consent as the portal writes one: its own identifier, our outreach-category coding
    (unless `category` is None: a Consent about something else), a contact point if given."""
    categories: list[dict[str, Any]] = [
        {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    if category is not None:
        categories.append({"coding": [{"system": OUTREACH_CATEGORY, "code": category}]})
    rule = "OPTOUT" if deny else "OPTIN"
    resource: dict[str, Any] = {
        "resourceType": "Consent", "status": "active",
        "identifier": [{"system": PORTAL, "value": f"{rule}-{at.timestamp():.0f}-{category}"}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": scope}]},
        "category": categories, "patient": {"reference": patient_ref},
        "dateTime": instant(at),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": rule}]},
        "provision": {"type": "deny" if deny else "permit", "period": {"start": instant(at)}},
    }
    if channel is not None:
        resource["extension"] = [{"url": CONTACT_EXTENSION, "valueContactPoint": {
            "system": channel, "value": address}}]
    return resource


def _ehr(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _book(rt: Runtime, *, email: str | None = EMAIL, mobile: str | None = MOBILE) -> str:
    """A patient and a booked appointment in the EHR, ingested, the booking confirmation sent
    (or not); returns Patient/id."""
    pat, _ = _ehr(rt).create(patient(email=email, mobile=mobile))
    appt, _ = _ehr(rt).create(appointment(f"Patient/{pat['id']}", START))
    ingest(rt, appt, source="test")
    drain(rt)
    return f"Patient/{pat['id']}"


def _visit(rt: Runtime, patient_ref: str) -> None:
    """A finished ambulatory visit: the satisfaction survey is planned for tomorrow 11:00."""
    encounter, _ = _ehr(rt).create({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": patient_ref},
        "period": {"start": instant(NOW - timedelta(hours=2)),
                   "end": instant(NOW - timedelta(hours=1))}})
    ingest(rt, encounter, source="test")


def _step(rt: Runtime, step_id: str, patient_ref: str | None = None) -> ScheduledStep:
    with rt.sessions() as session:
        query = select(ScheduledStep).join(Enrollment).where(ScheduledStep.step_id == step_id)
        if patient_ref is not None:
            query = query.where(Enrollment.patient == patient_ref)
        return session.scalars(query).one()


def _run(rt: Runtime, clock: SimulatedClock, step_id: str) -> ScheduledStep:
    """Let the clock reach the step, sweep, send what is due; the step as it ends up."""
    clock.set(max(clock.now(), _step(rt, step_id).due_at))
    jobs.sweep(rt)
    drain(rt)
    return _step(rt, step_id)


def _texted(twilio: TwilioServer) -> list[str]:
    return [m["to"] for m in twilio.messages]


def _mailed(smtp: SmtpServer) -> list[str]:
    return [to for received in smtp.received for to in received.rcpt_tos]


# -- (a) an opt-out written by another system ---------------------------------------------------


def test_an_sms_optout_written_by_another_system_sends_the_reminder_by_email(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
    smtp: SmtpServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid))

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "email")
    assert MOBILE not in _texted(twilio)
    assert _mailed(smtp).count(EMAIL) == 2  # the booking confirmation, then this reminder


def test_an_sms_optout_written_by_another_system_skips_an_sms_only_patient(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt, email=None)  # the booking confirmation goes by SMS
    assert _texted(twilio) == [MOBILE]
    yesterday = NOW - timedelta(days=1)
    portal.create(portal_consent(pid, at=yesterday))

    reminder = _run(rt, clock, "reminder-72h")

    assert reminder.state == StepState.SKIPPED
    assert f"opted out of sms in the EHR (Consent of {yesterday.date().isoformat()})" in (
        reminder.reason or "")
    assert _texted(twilio) == [MOBILE]  # nothing more


def test_an_optout_of_another_number_does_not_stop_this_one(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, address="+15555550999"))

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


def test_an_optout_that_has_not_started_yet_does_not_stop_the_reminder(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, at=NOW + timedelta(days=10)))

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")


# -- (b) a category ---------------------------------------------------------------------------


def test_an_optout_of_surveys_stops_the_survey_but_not_the_reminder(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    _visit(rt, pid)
    portal.create(portal_consent(pid, category="surveys"))

    survey = _run(rt, clock, "survey")
    reminder = _run(rt, clock, "reminder-72h")

    assert survey.state == StepState.SKIPPED
    assert "opted out of sms in the EHR" in (survey.reason or "")
    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms"), reminder.reason
    assert _texted(twilio) == [MOBILE]
    assert twilio.messages[0]["body"].startswith("Reminder: Pat")


def test_an_optout_of_appointments_on_every_channel_stops_the_reminder_not_the_survey(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
    smtp: SmtpServer,
) -> None:
    pid = _book(rt)
    _visit(rt, pid)
    portal.create(portal_consent(pid, category="appointments", channel=None, address=None))

    survey = _run(rt, clock, "survey")
    reminder = _run(rt, clock, "reminder-72h")

    assert (survey.state, survey.channel) == (StepState.SENT, "sms")
    assert "how was your visit" in twilio.messages[0]["body"]
    assert reminder.state == StepState.SKIPPED  # neither by SMS nor by email
    assert "opted out of sms in the EHR" in (reminder.reason or "")
    assert "opted out of email in the EHR" in (reminder.reason or "")
    assert _texted(twilio) == [MOBILE] and _mailed(smtp) == [EMAIL]  # the survey; the booking


# -- (c) a later opt-in lifts it ----------------------------------------------------------------


def test_a_later_optin_lifts_an_earlier_optout(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, at=NOW - timedelta(days=3)))
    portal.create(portal_consent(pid, deny=False, at=NOW - timedelta(days=1)))

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


def test_an_optin_written_after_the_first_reminder_lets_the_next_one_through(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, category="appointments"))
    assert _run(rt, clock, "reminder-72h").channel == "email"

    portal.create(portal_consent(pid, category="appointments", deny=False, at=clock.now()))
    reminder = _run(rt, clock, "reminder-24h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


def test_an_earlier_optin_does_not_lift_a_later_optout(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, deny=False, category="appointments",
                                 at=NOW - timedelta(days=3)))
    portal.create(portal_consent(pid, at=NOW - timedelta(days=1)))

    assert _run(rt, clock, "reminder-72h").channel == "email"
    assert _texted(twilio) == []


def test_opting_back_in_to_surveys_does_not_lift_a_stop_at_the_number(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    _visit(rt, pid)
    portal.create(portal_consent(pid, at=NOW - timedelta(days=3)))  # STOP: every category
    # Later the patient ticks surveys again (our preference page writes no contact point).
    portal.create(portal_consent(pid, category="surveys", deny=False, channel=None,
                                 at=NOW - timedelta(days=1)))

    survey = _run(rt, clock, "survey")

    assert survey.state == StepState.SKIPPED
    assert "opted out of sms in the EHR" in (survey.reason or "")
    assert _texted(twilio) == []


def test_start_at_the_number_does_not_lift_an_optout_of_surveys(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    _visit(rt, pid)
    portal.create(portal_consent(pid, category="surveys", channel=None,
                                 at=NOW - timedelta(days=3)))
    portal.create(portal_consent(pid, deny=False, at=NOW - timedelta(days=1)))  # START

    survey = _run(rt, clock, "survey")
    reminder = _run(rt, clock, "reminder-72h")

    assert survey.state == StepState.SKIPPED
    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


# -- (d) Consents about something else --------------------------------------------------------


@pytest.mark.parametrize("scope", ["research", "patient-privacy"])
def test_a_consent_without_the_outreach_category_changes_nothing(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer, scope: str,
) -> None:
    pid = _book(rt)
    portal.create(portal_consent(pid, category=None, channel=None, scope=scope))
    portal.create(portal_consent(pid, category=None, scope=scope))  # even naming the number

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


def test_an_inactive_optout_changes_nothing(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    pid = _book(rt)
    portal.create({**portal_consent(pid), "status": "inactive"})

    assert _run(rt, clock, "reminder-72h").channel == "sms"


def test_the_ehr_consents_are_not_read_when_switched_off(
    make_runtime: RuntimeFactory, settings: dict[str, Any], clock: SimulatedClock,
    portal: FhirClient, twilio: TwilioServer,
) -> None:
    rt = make_runtime(clock=clock, read_ehr_consent=False, **settings)
    pid = _book(rt)
    portal.create(portal_consent(pid))

    assert _run(rt, clock, "reminder-72h").channel == "sms"


# -- (e) one request for the Patient and its Consents -------------------------------------------


class Recorder(httpx.HTTPTransport):
    """Every request the EHR client makes, as `METHOD path?query`."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        return super().handle_request(request)


def _recorded(rt: Runtime, fhir: FhirTestServer) -> Recorder:
    """Swap the runtime's EHR client for one on a recording transport."""
    recorder = Recorder()
    _ehr(rt).close()
    rt.ehr = FhirClient(fhir.base_url, transport=recorder)
    return recorder


def _send_booked(rt: Runtime, recorder: Recorder) -> list[str]:
    """Send the queued booking confirmation; the EHR requests that send made."""
    queue = rt.enqueue
    (step_id,) = queue.steps  # type: ignore[attr-defined]
    queue.steps.clear()  # type: ignore[attr-defined]
    recorder.requests.clear()
    outcome = jobs.send_step(rt, step_id)
    assert outcome.state == StepState.SENT, outcome
    return list(recorder.requests)


def test_the_consents_come_with_the_patient_in_one_request(
    make_runtime: RuntimeFactory, settings: dict[str, Any], clock: SimulatedClock,
    fhir: FhirTestServer, portal: FhirClient, smtp: SmtpServer,
) -> None:
    with_consents = make_runtime(clock=clock, **settings)
    without = make_runtime(clock=clock, read_ehr_consent=False, **settings)
    counts = {}
    for rt in (with_consents, without):
        recorder = _recorded(rt, fhir)
        pat, _ = portal.create(patient(mobile=MOBILE, email=EMAIL))
        pid = f"Patient/{pat['id']}"
        portal.create(portal_consent(pid, channel="email", address=EMAIL))
        portal.create(portal_consent(pid, category=None))  # not about outreach: still included
        appt, _ = portal.create(appointment(pid, START))
        ingest(rt, appt, source="test")
        requests = _send_booked(rt, recorder)
        counts[rt.settings.read_ehr_consent] = requests
        # The Appointment, its Patient and the Patient's Consents: one search.
        include = f"GET /fhir/Appointment?_id={appt['id']}&_include=Appointment%3Apatient"
        if rt.settings.read_ehr_consent:
            assert requests[0] == include + "&_revinclude%3Aiterate=Consent%3Apatient"
            assert _step(rt, "booked", pid).channel == "sms"  # the one request had the Consent
        else:
            assert requests[0] == include
            assert _step(rt, "booked", pid).channel == "email"
    assert len(counts[True]) == len(counts[False]) == 1


# -- (f) numbers written without a country code -------------------------------------------------


def test_a_national_number_is_texted_in_e164_and_a_stop_from_it_blocks_the_next_text(
    make_runtime: RuntimeFactory, settings: dict[str, Any], clock: SimulatedClock,
    twilio: TwilioServer, api_server: ApiServer,
) -> None:
    rt = make_runtime(clock=clock, default_country_code="1", public_url=api_server.url,
                      **settings)
    _book(rt, email=None, mobile=NATIONAL)
    assert _texted(twilio) == [MOBILE]  # the booking confirmation

    response = signed_post(f"{api_server.url}/channels/twilio/inbound",
                           inbound_params(MOBILE, CLINIC, "STOP"))
    assert response.status_code == 200, response.text
    drain(rt)  # the STOP's Consent written back to the EHR
    reminder = _run(rt, clock, "reminder-72h")

    assert reminder.state == StepState.SKIPPED and "opted out of sms" in (reminder.reason or "")
    assert _texted(twilio) == [MOBILE]


def test_a_national_optout_written_by_another_system_matches_the_e164_number(
    make_runtime: RuntimeFactory, settings: dict[str, Any], clock: SimulatedClock,
    portal: FhirClient, twilio: TwilioServer,
) -> None:
    rt = make_runtime(clock=clock, default_country_code="1", **settings)
    pid = _book(rt, mobile=NATIONAL)
    portal.create(portal_consent(pid, address=NATIONAL))  # spelled as the chart spells it

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "email")
    assert _texted(twilio) == []


def test_an_email_optout_matches_whatever_the_case_of_the_address(
    rt: Runtime, portal: FhirClient, clock: SimulatedClock, smtp: SmtpServer,
) -> None:
    pid = _book(rt, email="Pat@Example.org", mobile=None)  # the chart's spelling
    assert _mailed(smtp) == ["Pat@Example.org"]
    portal.create(portal_consent(pid, channel="email", address=EMAIL))

    reminder = _run(rt, clock, "reminder-72h")

    assert reminder.state == StepState.SKIPPED
    assert "opted out of email in the EHR" in (reminder.reason or "")
    assert len(smtp.messages) == 1


def test_without_a_country_code_a_national_number_falls_back_to_email(
    rt: Runtime, clock: SimulatedClock, twilio: TwilioServer, smtp: SmtpServer,
) -> None:
    _book(rt, mobile=NATIONAL)

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "email")
    assert _texted(twilio) == [] and _mailed(smtp) == [EMAIL, EMAIL]


def test_without_a_country_code_and_no_email_the_skip_says_why(
    rt: Runtime, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    _book(rt, email=None, mobile=NATIONAL)

    reminder = _run(rt, clock, "reminder-72h")

    assert reminder.state == StepState.SKIPPED
    assert "cannot be dialled" in (reminder.reason or "")
    assert "OUTREACH_DEFAULT_COUNTRY_CODE" in (reminder.reason or "")
    assert _texted(twilio) == []


# -- an EHR that will not answer the search ------------------------------------------------------


def test_an_ehr_that_refuses_the_revinclude_search_still_gets_its_reminders(
    rt: Runtime, fhir: FhirTestServer, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    _book(rt)
    fhir.features(without_search_params=["_id"])  # Patient?_id=… answers 400, reads still work

    reminder = _run(rt, clock, "reminder-72h")

    assert (reminder.state, reminder.channel) == (StepState.SENT, "sms")
    assert _texted(twilio) == [MOBILE]


def test_an_ehr_outage_during_the_consent_read_retries_later(
    rt: Runtime, fhir: FhirTestServer, clock: SimulatedClock, twilio: TwilioServer,
) -> None:
    _book(rt)
    fhir.outage(503)  # the one search (Appointment, its Patient, their Consents) fails

    reminder = _run(rt, clock, "reminder-72h")

    assert reminder.state == StepState.SCHEDULED and reminder.due_at > clock.now()
    assert (reminder.reason or "").startswith("EHR unavailable")
    assert _texted(twilio) == []
