"""Staff sign-in to the dashboard at the EHR, in a real headless Chromium (Debian's) driven by
Playwright, on the demo's data. The dashboard is reached as `localhost` and the authorization
server as `127.0.0.1`, and the user approves on the EHR's own page: two sites, as in a hospital,
so the browser applies its cross-site cookie rules to the way back (a plain redirect to the
dashboard would arrive without the SameSite=Strict session cookie). Screenshots:
test-artifacts/dashboard-smart-sign-in.png and dashboard-smart-refused.png."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.demo import run_demo
from outreach.reports.service import outcome_report, period
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.smart_auth_server import CLIENT_ID, SmartAuthServer

pytestmark = needs_chromium
SESSION_SECRET = "smart-session-secret-for-tests-" + "s" * 16
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)  # two days after the demo's last visit
LAPTOP = {"width": 1366, "height": 900}
DOCTOR = "Practitioner/doc-1"


def _site(api: ApiServer) -> str:
    return f"http://localhost:{api.port}"


@pytest.fixture
def auth(api_server: ApiServer) -> Iterator[SmartAuthServer]:
    with SmartAuthServer() as server:
        server.state.also_redirect_to.add(f"{_site(api_server)}/dashboard/sign-in/smart/callback")
        server.state.user = DOCTOR
        server.state.sign_in_page = True
        yield server


@pytest.fixture
def rt(make_runtime: RuntimeFactory, tmp_path: Path, api_server: ApiServer,
       auth: SmartAuthServer) -> Runtime:
    run_demo(tmp_path, io.StringIO(), load_settings(database_url="sqlite:///unused.db"))
    return make_runtime(database_url=f"sqlite:///{tmp_path / 'outreach.db'}",
                        clock=SimulatedClock(NOW), public_url=_site(api_server),
                        smart_client_id=CLIENT_ID, smart_allowed_iss=auth.fhir_base,
                        smart_session_secret=SESSION_SECRET)


def test_a_practitioner_signs_in_at_the_ehr_and_lands_on_the_dashboard(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, chromium: Any
) -> None:
    page = chromium.new_page(viewport=LAPTOP)
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))
    page.goto(f"{_site(api_server)}/dashboard")
    page.wait_for_url(f"{_site(api_server)}/dashboard/sign-in")
    page.click("text=Sign in with 127.0.0.1")
    page.wait_for_url(f"{auth.base_url}/authorize?*")
    page.click("text=Approve")
    page.wait_for_url(f"{_site(api_server)}/dashboard")

    assert f"Signed in as {DOCTOR}" in page.inner_text("header")
    everything = outcome_report(rt, period(date(2026, 2, 13), date(2026, 3, 12)))
    assert page.inner_text('a.card[href*="figure=appointments"] .value') == \
        str(everything["appointments"])
    assert any(url.startswith(f"{auth.base_url}/authorize?") for url in visited)
    assert all(url.startswith((_site(api_server), f"{auth.base_url}/authorize"))
               for url in visited)  # the token exchange is ours, server to server
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-smart-sign-in.png"), full_page=True)

    page.click('button:has-text("Sign out")')
    page.wait_for_url(f"{_site(api_server)}/dashboard/sign-in")
    page.goto(f"{_site(api_server)}/dashboard")
    page.wait_for_url(f"{_site(api_server)}/dashboard/sign-in")


def test_a_refusal_at_the_ehr_comes_back_as_a_page_to_try_again_from(
    rt: Runtime, api_server: ApiServer, auth: SmartAuthServer, chromium: Any
) -> None:
    auth.state.user = "Patient/pat-1"
    page = chromium.new_page(viewport=LAPTOP)
    page.goto(f"{_site(api_server)}/dashboard/sign-in")
    page.click("text=Sign in with 127.0.0.1")
    page.click("text=Approve")
    page.wait_for_url(f"{_site(api_server)}/dashboard/sign-in/smart/callback?*")
    alert = page.inner_text('[role="alert"]')
    assert "A Patient may not open the managers' dashboard." in alert
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-smart-refused.png"), full_page=True)
    auth.state.user = DOCTOR  # another account, from the same page
    page.click("text=Sign in with 127.0.0.1")
    page.click("text=Approve")
    page.wait_for_url(f"{_site(api_server)}/dashboard")
    assert f"Signed in as {DOCTOR}" in page.inner_text("header")
