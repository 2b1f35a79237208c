"""The clinician view in a real headless Chromium (Debian's), driven by Playwright: the EHR
launch through the local authorization server to the timeline, on data made by the real
pipeline (ingest, dispatch over the Twilio-shaped API, signed inbound webhooks); and the same
inside an EHR's cross-site iframe, in a browser that blocks third-party cookies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import assert_no_launch_secrets
from tests.support.api_server import ApiServer
from tests.support.browser import ARTIFACTS, NO_THIRD_PARTY_COOKIES, launch, needs_chromium
from tests.support.drain import drain
from tests.support.ehr_page import EhrPage
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_REMINDERS
from tests.support.smart_auth_server import SmartAuthServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

pytestmark = needs_chromium
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
CLINIC, MOBILE = "+15555550100", "+15555550123"
PANEL = {"width": 400, "height": 900}  # an EHR side panel


EMBEDDED_LAUNCH = "embedded-launch-5d1e"


def _runtime(make_runtime: RuntimeFactory, smart_settings: dict[str, Any],
             fhir: FhirTestServer, twilio: TwilioServer, tmp_path: Path, **extra: Any
             ) -> Runtime:
    (tmp_path / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    return make_runtime(
        rules_dir=tmp_path, clock=SimulatedClock(NOW), fhir_base_url=fhir.base_url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100,
        organization_name="St Example", **smart_settings, **extra)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, smart_settings: dict[str, Any], fhir: FhirTestServer,
       twilio: TwilioServer, tmp_path: Path) -> Runtime:
    return _runtime(make_runtime, smart_settings, fhir, twilio, tmp_path)


@pytest.fixture
def ehr(api_server: ApiServer, auth: SmartAuthServer) -> Iterator[EhrPage]:
    with EhrPage(f"{api_server.url}/smart/launch?iss={auth.fhir_base}"
                 f"&launch={EMBEDDED_LAUNCH}") as page:
        yield page


@pytest.fixture
def embedded_rt(make_runtime: RuntimeFactory, smart_settings: dict[str, Any],
                fhir: FhirTestServer, twilio: TwilioServer, tmp_path: Path, ehr: EhrPage
                ) -> Runtime:
    return _runtime(make_runtime, smart_settings, fhir, twilio, tmp_path,
                    smart_frame_ancestors=ehr.origin)


@pytest.fixture
def chromium_blocking_third_party_cookies() -> Iterator[Any]:
    yield from launch(NO_THIRD_PARTY_COOKIES)


def _reply(rt: Runtime, api: ApiServer, body: str) -> None:
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(MOBILE, CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)


def _outreach(rt: Runtime, api: ApiServer, twilio: TwilioServer) -> str:
    """Book, confirm by SMS, send the 72 h reminder (delivered), then a free-text reply (a Task
    for staff) and STOP. Returns the patient's id."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(email=None, mobile=MOBILE))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
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
    _reply(rt, api, "Can I bring my daughter?")
    rt.clock.set(due + timedelta(minutes=25))  # type: ignore[attr-defined]
    _reply(rt, api, "STOP")
    return str(pat["id"])


def test_a_clinician_launches_from_the_ehr_and_sees_the_outreach_timeline(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, twilio: TwilioServer,
    chromium: Any,
) -> None:
    patient_id = _outreach(rt, api_server, twilio)
    auth.register_launch("xyz", patient_id)
    page = chromium.new_page(viewport=PANEL)
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))

    page.goto(f"{api_server.url}/smart/launch?iss={auth.fhir_base}&launch=xyz")
    page.wait_for_url(f"{api_server.url}/smart/timeline")

    assert any(url.startswith(f"{auth.base_url}/authorize?") for url in visited)
    assert not any(patient_id in url for url in visited)  # never in a URL
    text = page.inner_text("body")
    assert "Reminder 72h" in text and "delivered" in text  # the sent reminder
    assert "Booked" in text
    assert "Can I bring my daughter?" in text  # the reply
    assert "Open tasks for staff (1)" in text
    assert "free-text reply" in text  # the open Task
    assert "Opted out of SMS" in text
    assert "STOP (opt-out)" in text
    assert page.evaluate("document.documentElement.scrollWidth") <= PANEL["width"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "smart-timeline.png"), full_page=True)


def test_a_bad_iss_shows_the_error_page_and_the_browser_stays_on_our_host(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, chromium: Any,
) -> None:
    page = chromium.new_page(viewport=PANEL)
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))
    response = page.goto(f"{api_server.url}/smart/launch?iss=https://evil.example/fhir"
                         "&launch=xyz")
    assert response is not None and response.status == 400
    assert page.url.startswith(f"{api_server.url}/smart/launch")
    assert "not allowed to launch" in page.inner_text("body")
    assert all(url.startswith(api_server.url) for url in visited)
    page.goto(f"{api_server.url}/smart/timeline")
    assert "No patient is open" in page.inner_text("body")


def test_the_view_inside_an_ehrs_cross_site_iframe_shows_the_timeline_without_cookies(
    embedded_rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, twilio: TwilioServer,
    ehr: EhrPage, access_log: list[str], chromium_blocking_third_party_cookies: Any,
) -> None:
    patient_id = _outreach(embedded_rt, api_server, twilio)
    auth.register_launch(EMBEDDED_LAUNCH, patient_id)
    browser = chromium_blocking_third_party_cookies
    page = browser.new_page(viewport={"width": 420, "height": 920})
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))

    page.goto(ehr.url)  # http://localhost:…, the app in its frame at http://127.0.0.1:…
    app = page.frame_locator("#app")
    app.get_by_text("Open tasks for staff (1)").wait_for(timeout=20_000)

    text = app.locator("body").inner_text()
    assert "Reminder 72h" in text and "delivered" in text
    assert "Can I bring my daughter?" in text and "Opted out of SMS" in text
    (frame,) = [f for f in page.frames if f.url.startswith(api_server.url)]
    # No cookie came back to the frame: the launch finished on its sealed state and the
    # page was opened with a page token.
    assert frame.url.startswith(f"{api_server.url}/smart/timeline?session_token=")
    assert browser.contexts[0].cookies(api_server.url) == []
    assert not any(patient_id in url for url in visited)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "smart-timeline-embedded.png"), full_page=True)

    token = frame.url.split("session_token=", 1)[1]
    assert_no_launch_secrets(access_log, EMBEDDED_LAUNCH, token[:40],
                             *(r["state"] for r in auth.state.authorize_requests),
                             *auth.state.grants)
