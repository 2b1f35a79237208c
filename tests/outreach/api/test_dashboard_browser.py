"""The managers' dashboard in a real headless Chromium (Debian's), driven by Playwright against
the API under uvicorn, on the demo's data: sign in with the keyboard, change the period and a
filter with the form, follow a number to its appointments, and screenshots at laptop and tablet
sizes (test-artifacts/dashboard-*.png)."""

from __future__ import annotations

import io
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

pytestmark = needs_chromium
TOKEN = "manager-token-0123456789abcdef"
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)  # two days after the demo's last visit
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


@pytest.fixture
def rt(make_runtime: RuntimeFactory, tmp_path: Path) -> Runtime:
    run_demo(tmp_path, io.StringIO(), load_settings(database_url="sqlite:///unused.db"))
    return make_runtime(database_url=f"sqlite:///{tmp_path / 'outreach.db'}",
                        clock=SimulatedClock(NOW), admin_tokens=f"manager={TOKEN}")


def _sign_in(page: Any, api: ApiServer) -> None:
    """With the keyboard only: the token field is the first thing Tab reaches."""
    page.goto(f"{api.url}/dashboard")
    page.wait_for_url(f"{api.url}/dashboard/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{api.url}/dashboard")


def _card(page: Any, figure: str) -> str:
    return str(page.inner_text(f'a.card[href*="figure={figure}"] .value'))


def _charts_loaded(page: Any) -> list[int]:
    widths: list[int] = page.eval_on_selector_all(
        "img.chart", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    return widths


def _fits(page: Any, width: int) -> None:
    """Nothing sticks out of the page sideways, and no table hides columns in its scroll box
    (a headless or touch browser shows no scroll bar: the columns would just be cut off)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    overflowing = page.eval_on_selector_all(
        "main > *, .cards > *, .grid2 > *, form.filters > *",
        f"els => els.filter(e => e.getBoundingClientRect().right > {width})"
        ".map(e => e.outerHTML.slice(0, 80))")
    assert overflowing == []
    cut = page.eval_on_selector_all(
        ".scroll", "els => els.filter(e => e.offsetParent && e.scrollWidth > e.clientWidth)"
        ".map(e => `${e.querySelector('th:nth-child(2)').textContent}: `"
        " + `${e.scrollWidth - e.clientWidth}px hidden`)")
    assert cut == []


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_manager_signs_in_filters_and_drills_down(
    rt: Runtime, api_server: ApiServer, chromium: Any
) -> None:
    page = chromium.new_page(viewport=LAPTOP)
    _sign_in(page, api_server)
    assert "Signed in as manager" in page.inner_text("header")
    everything = outcome_report(rt, period(date(2026, 2, 13), date(2026, 3, 12)))
    assert _card(page, "appointments") == str(everything["appointments"]) == "6"
    assert _card(page, "no_show") == "1"
    assert all(width > 0 for width in _charts_loaded(page)) and len(_charts_loaded(page)) == 2
    for summary in page.query_selector_all("details summary"):
        summary.click()  # the numbers behind the charts, in the screenshot too
    _shot(page, "dashboard-laptop.png")  # before the layout checks: it shows what failed
    _fits(page, LAPTOP["width"])

    # A shorter period, SMS only, broken down by language.
    page.fill('input[name="from"]', "2026-03-01")
    page.fill('input[name="to"]', "2026-03-10")
    page.select_option('select[name="channel"]', "sms")
    page.select_option('select[name="by"]', "language")
    page.click('button[type="submit"]:has-text("Show")')
    page.wait_for_url("**/dashboard?from=2026-03-01&to=2026-03-10*channel=sms*")
    sms = outcome_report(rt, period(date(2026, 3, 1), date(2026, 3, 10)), {"channel": "sms"})
    assert _card(page, "appointments") == str(sms["appointments"])
    assert _card(page, "reached") == str(sms["reached"])
    assert page.input_value('select[name="channel"]') == "sms"
    assert page.input_value('input[name="from"]') == "2026-03-01"
    assert "By language" in page.inner_text("main")
    assert len(_charts_loaded(page)) == 2 and min(_charts_loaded(page)) > 0

    page.click('a.card[href*="figure=reached"]')
    page.wait_for_url("**/dashboard/appointments?*figure=reached*")
    rows = page.query_selector_all("tbody tr")
    assert len(rows) == sms["reached"] == 4
    heading = page.inner_text("h2")
    assert "4 appointments: reached, 2026-03-01 to 2026-03-10, channel = sms" in heading
    assert all("sms" in row.inner_text() for row in rows)
    _shot(page, "dashboard-drilldown.png")
    _fits(page, LAPTOP["width"])
    page.click("text=Back to the dashboard")
    page.wait_for_url("**/dashboard?from=2026-03-01&to=2026-03-10*channel=sms*")
    assert page.input_value('select[name="by"]') == "language"  # the breakdown kept too


def test_the_dashboard_fits_a_tablet(rt: Runtime, api_server: ApiServer, chromium: Any) -> None:
    page = chromium.new_page(viewport=TABLET)
    _sign_in(page, api_server)
    page.goto(f"{api_server.url}/dashboard?by=step")
    assert len(_charts_loaded(page)) == 2 and min(_charts_loaded(page)) > 0
    for summary in page.query_selector_all("details summary"):
        summary.click()
    _shot(page, "dashboard-tablet.png")
    _fits(page, TABLET["width"])
    # The two side-by-side boxes stack at this width instead of squeezing.
    boxes = page.eval_on_selector_all(".grid2 > section",
                                      "els => els.map(e => e.getBoundingClientRect().left)")
    assert len(set(boxes)) == 1
    page.click('a.card[href*="figure=appointments"]')  # every appointment, every message
    page.wait_for_url("**/dashboard/appointments?*figure=appointments*")
    assert len(page.query_selector_all("tbody tr")) == 6
    _fits(page, TABLET["width"])
    page.click('button:has-text("Sign out")')
    page.wait_for_url(f"{api_server.url}/dashboard/sign-in")
    page.goto(f"{api_server.url}/dashboard")
    page.wait_for_url(f"{api_server.url}/dashboard/sign-in")
