"""The clinician view in a real headless Chromium (Debian's), driven by Playwright: the EHR
launch through the local authorization server to the timeline, on data made by the real
pipeline (ingest, dispatch over the Twilio-shaped API, signed inbound webhooks); the same
inside an EHR's cross-site iframe, in a browser that blocks third-party cookies; a clinician
answers the patient and closes the Task from the page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from outreach.core.ports import Runtime
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import (
    assert_no_launch_secrets,
    outreach_runtime,
    run_outreach,
)
from tests.support.api_server import ApiServer
from tests.support.browser import ARTIFACTS, NO_THIRD_PARTY_COOKIES, launch, needs_chromium
from tests.support.drain import drain
from tests.support.ehr_page import EhrPage
from tests.support.fhir_server import FhirTestServer
from tests.support.smart_auth_server import SmartAuthServer
from tests.support.twilio_server import TwilioServer

pytestmark = needs_chromium
PANEL = {"width": 400, "height": 900}  # an EHR side panel


@pytest.fixture
def rt(ehr_rt: Runtime) -> Runtime:
    return ehr_rt


EMBEDDED_LAUNCH = "embedded-launch-5d1e"


@pytest.fixture
def ehr(api_server: ApiServer, auth: SmartAuthServer) -> Iterator[EhrPage]:
    with EhrPage(f"{api_server.url}/smart/launch?iss={auth.fhir_base}"
                 f"&launch={EMBEDDED_LAUNCH}") as page:
        yield page


@pytest.fixture
def embedded_rt(make_runtime: RuntimeFactory, smart_settings: dict[str, Any],
                fhir: FhirTestServer, twilio: TwilioServer, auth: SmartAuthServer,
                tmp_path: Path, ehr: EhrPage) -> Runtime:
    return outreach_runtime(make_runtime, smart_settings, fhir, twilio, auth, tmp_path,
                            smart_frame_ancestors=ehr.origin)


@pytest.fixture
def chromium_blocking_third_party_cookies() -> Iterator[Any]:
    yield from launch(NO_THIRD_PARTY_COOKIES)


def test_a_clinician_launches_from_the_ehr_and_sees_the_outreach_timeline(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, twilio: TwilioServer,
    chromium: Any,
) -> None:
    patient_id = run_outreach(rt, api_server, twilio)
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
    patient_id = run_outreach(embedded_rt, api_server, twilio)
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

    # Staff act from inside the frame, still without a cookie: the form carries the page
    # token, and the page comes back (post/redirect/get) with a fresh one.
    app.get_by_role("button", name="Mark done").click()
    app.get_by_text("Task marked done.").wait_for(timeout=20_000)
    assert "Open tasks for staff (0)" in app.locator("body").inner_text()
    (frame,) = [f for f in page.frames if f.url.startswith(api_server.url)]
    assert "session_token=" in frame.url and token not in frame.url
    assert browser.contexts[0].cookies(api_server.url) == []

    assert_no_launch_secrets(access_log, EMBEDDED_LAUNCH, token[:40],
                             frame.url.split("session_token=", 1)[1][:40],
                             *(r["state"] for r in auth.state.authorize_requests),
                             *auth.state.grants)


def test_a_clinician_answers_the_patient_and_closes_the_task_from_the_timeline(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, twilio: TwilioServer,
    fhir: FhirTestServer, chromium: Any,
) -> None:
    patient_id = run_outreach(rt, api_server, twilio, stop=False)
    assert rt.ehr is not None
    (doctor,) = rt.ehr.search("Practitioner", {"family": "Whitfield"})
    auth.state.user = f"Practitioner/{doctor['id']}"  # the visit's clinician answers
    auth.register_launch("xyz", patient_id)
    auth.state.need_patient_banner = True
    page = chromium.new_page(viewport=PANEL)
    page.goto(f"{api_server.url}/smart/launch?iss={auth.fhir_base}&launch=xyz")
    page.wait_for_url(f"{api_server.url}/smart/timeline")

    banner = page.get_by_role("banner", name="Patient").inner_text()
    assert "Maria Example" in banner and "DOB 12 Mar 1961" in banner
    visit = page.inner_text("body")
    assert "Follow-up visit" in visit and "Main Street Clinic" in visit
    assert "Dr Dana Whitfield" in visit

    rt.clock.set(rt.clock.now() + timedelta(minutes=7))  # type: ignore[attr-defined]
    page.fill("#reply-text", "Yes, of course. Please bring her along on the day.")
    page.click("text=Send reply")
    page.wait_for_selector("text=Sent by SMS.")
    assert twilio.messages[-1]["body"] == "Yes, of course. Please bring her along on the day."
    thread = page.inner_text("ol.thread")
    assert thread.index("Can I bring my daughter?") < thread.index("Please bring her along")
    # The staff message names who wrote it, as the EHR names them.
    assert "Dr Dana Whitfield · SMS" in thread

    page.click("text=Mark done")
    page.wait_for_selector("text=Task marked done.")
    assert "Open tasks for staff (0)" in page.inner_text("body")
    drain(rt)  # the write-backs: the reply and the Task, as the worker would
    (task,) = rt.ehr.search("Task", {"patient": f"Patient/{patient_id}"})
    assert task["status"] == "completed"
    assert page.evaluate("document.documentElement.scrollWidth") <= PANEL["width"]
    page.reload()  # a GET: nothing is sent again
    assert len([m for m in twilio.messages if "bring her along" in (m["body"] or "")]) == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "smart-staff-reply.png"), full_page=True)
