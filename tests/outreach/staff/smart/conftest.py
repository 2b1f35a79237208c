"""Fixtures for the SMART view: the local authorization server, a runtime wired to it, a client,
and a patient's outreach made end to end in an EHR the view reads as the signed-in user."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import SERVICE_TYPE_SYSTEM, appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_REMINDERS
from tests.support.smart_auth_server import CLIENT_ID, SmartAuthServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

SESSION_SECRET = "smart-session-secret-for-tests-" + "s" * 16
PATIENT_ID = "pat-1"


@pytest.fixture
def auth(api_server: ApiServer) -> Iterator[SmartAuthServer]:
    with SmartAuthServer(f"{api_server.url}/smart/callback") as server:
        server.register_launch("xyz", PATIENT_ID)
        yield server


@pytest.fixture
def smart_settings(api_server: ApiServer, auth: SmartAuthServer) -> dict[str, object]:
    return {"public_url": api_server.url, "smart_client_id": CLIENT_ID,
            "smart_allowed_iss": auth.fhir_base, "smart_session_secret": SESSION_SECRET}


@pytest.fixture
def smart_rt(make_runtime: RuntimeFactory, smart_settings: dict[str, object]) -> Runtime:
    return make_runtime(**smart_settings)


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[httpx.Client]:
    """An HTTP client that keeps cookies and does not follow redirects, so each hop is seen."""
    with httpx.Client(base_url=api_server.url, follow_redirects=False, timeout=10) as client:
        yield client


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log(api_server: ApiServer) -> Iterator[list[str]]:
    """The lines uvicorn's access log writes during the test, after our redaction filter (the
    test server logs at warning; this turns the access log on for new connections)."""
    logger = logging.getLogger("uvicorn.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def assert_no_launch_secrets(lines: list[str], *secrets: str) -> None:
    """The access log saw the SMART requests, and none of the launch's secrets."""
    assert any("/smart/callback?" in line and "code=…" in line and "state=…" in line
               for line in lines), lines
    for line in lines:
        for secret in secrets:
            assert secret not in line, (secret, line)


# -- A patient's outreach made by the real pipeline, in an EHR the view reads as the user ------

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
CLINIC, MOBILE = "+15555550100", "+15555550123"
DOCTOR = "Practitioner/doc-1"  # who signs in (the id_token's fhirUser)
CLINIC_ZONE = "America/New_York"


def outreach_runtime(make_runtime: RuntimeFactory, smart_settings: dict[str, Any],
                     fhir: FhirTestServer, twilio: TwilioServer, auth: SmartAuthServer,
                     rules_dir: Path, **extra: Any) -> Runtime:
    """A runtime on the real FHIR server, whose API the SMART `iss` serves to signed-in users
    (a clinician, DOCTOR), sending SMS through the Twilio-shaped server."""
    (rules_dir / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    auth.state.fhir_upstream = fhir.base_url
    auth.state.user = DOCTOR
    return make_runtime(
        rules_dir=rules_dir, clock=SimulatedClock(NOW), fhir_base_url=fhir.base_url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100,
        organization_name="St Example", timezone=CLINIC_ZONE, **smart_settings, **extra)


@pytest.fixture
def ehr_rt(make_runtime: RuntimeFactory, smart_settings: dict[str, Any], fhir: FhirTestServer,
           twilio: TwilioServer, auth: SmartAuthServer, tmp_path: Path) -> Runtime:
    return outreach_runtime(make_runtime, smart_settings, fhir, twilio, auth, tmp_path)


def patient_texts(rt: Runtime, api: ApiServer, body: str) -> None:
    """The patient's SMS, through the signed inbound webhook, and everything it leads to."""
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(MOBILE, CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)


def run_outreach(rt: Runtime, api: ApiServer, twilio: TwilioServer, *, stop: bool = True
                 ) -> str:
    """Book (a follow-up with a named clinician), confirm by SMS, send the 72 h reminder
    (delivered), then a free-text reply (a Task for staff) and, with `stop`, STOP. Returns the
    patient's id."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create({**patient(email=None, mobile=MOBILE, given="Maria"),
                            "birthDate": "1961-03-12", "gender": "female"})
    doctor, _ = rt.ehr.create({"resourceType": "Practitioner", "name": [
        {"use": "official", "prefix": ["Dr"], "given": ["Dana"], "family": "Whitfield"}]})
    booked = appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5))
    booked["serviceType"] = [{"coding": [{"system": SERVICE_TYPE_SYSTEM, "code": "124",
                                          "display": "General Practice"}]}]
    booked["appointmentType"] = {"text": "Follow-up visit"}
    booked["participant"].append({"actor": {"reference": f"Practitioner/{doctor['id']}"},
                                  "required": "required", "status": "accepted"})
    appt, _ = rt.ehr.create(booked)
    ingest(rt, appt, source="test")
    drain(rt)
    with rt.sessions() as session:
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "reminder-72h")).one()
    rt.clock.set(due)  # type: ignore[attr-defined]
    jobs.sweep(rt)
    drain(rt)
    assert len(twilio.messages) == 2
    assert twilio.status_callback(twilio.messages[1], "delivered").status_code == 204
    rt.clock.set(due + timedelta(minutes=10))  # type: ignore[attr-defined]
    patient_texts(rt, api, "Can I bring my daughter?")
    if stop:
        rt.clock.set(due + timedelta(minutes=25))  # type: ignore[attr-defined]
        patient_texts(rt, api, "STOP")
    return str(pat["id"])
