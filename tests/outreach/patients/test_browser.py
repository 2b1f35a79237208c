"""The preference page in a real headless Chromium (Debian's) on a phone-sized screen, driven by
Playwright against the app under uvicorn: a Spanish-speaking patient opens the link from a
message, finds every control by its label, changes their choices and saves them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.store.models import PatientPreference
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.browser import ARTIFACTS, needs_chromium

pytestmark = needs_chromium
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
PATIENT = "Patient/pat-1"
PHONE = {"width": 390, "height": 844}
TOUCH_TARGET = 44  # px, the smallest comfortable tap target (WCAG 2.5.5, Apple HIG)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, api_server: ApiServer) -> Runtime:
    return make_runtime(clock=SimulatedClock(NOW), public_url=api_server.url,
                        preferences_secret="x" * 40, organization_name="St Example")


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                   device_scale_factor=2)
    yield context.new_page()
    context.close()


def _unlabelled(page: Any) -> list[str]:
    """Form controls whose accessible name would be empty: no <label> around or for them."""
    return list(page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .filter(e => ![...e.labels].some(l => l.textContent.trim())
                     && !(e.getAttribute('aria-label') || '').trim())
        .map(e => e.outerHTML)"""))


def _small_targets(page: Any) -> list[str]:
    """Controls (or their labels, which take the tap) under the touch-target size."""
    return list(page.evaluate("""(size) => [...document.querySelectorAll(
            'label.choice, input[type=time], button')]
        .filter(e => { const r = e.getBoundingClientRect();
                       return r.height < size || r.width < size; })
        .map(e => e.outerHTML.slice(0, 80))""", TOUCH_TARGET))


def _headings_outside_their_card(page: Any) -> list[str]:
    """Fieldset legends drawn across the card's top border instead of inside it (a long one
    then wraps over the border)."""
    return list(page.evaluate("""() => [...document.querySelectorAll('fieldset')]
        .filter(f => f.querySelector('legend').getBoundingClientRect().top
                     - f.getBoundingClientRect().top < 8)
        .map(f => f.querySelector('legend').textContent)"""))


def _fits_the_screen(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_patient_changes_their_preferences_on_a_phone(
    rt: Runtime, api_server: ApiServer, phone: Any
) -> None:
    link = rt.settings.preferences_link(PATIENT, "es", NOW)
    assert link is not None and link.startswith(f"{api_server.url}/p/")
    page = phone

    response = page.goto(link)

    assert response is not None and response.status == 200
    assert page.locator("html").get_attribute("lang") == "es"
    assert page.get_by_role("heading", level=1).inner_text() == "Sus preferencias de mensajes"
    assert _unlabelled(page) == []
    assert _small_targets(page) == []
    assert _headings_outside_their_card(page) == []
    _fits_the_screen(page)
    # Every control is found by what a screen reader says of it, in Spanish.
    channel = page.get_by_role("group", name="¿Cómo prefiere que le contactemos primero?")
    assert channel.get_by_role("radio", name="Sin preferencia").is_checked()
    surveys = page.get_by_label("Encuestas breves sobre su visita")
    assert surveys.is_checked()
    assert page.get_by_label("Confirmaciones y recordatorios de citas").is_checked()
    assert page.get_by_role("radio", name="Español").is_checked()
    quiet_from = page.get_by_label("Desde")
    quiet_to = page.get_by_label("Hasta")
    assert quiet_from.input_value() == "" and quiet_to.input_value() == ""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "preferences-es.png"), full_page=True)

    page.get_by_text("English", exact=True).click()  # the label's text takes the tap
    surveys.focus()
    page.keyboard.press("Space")
    assert not surveys.is_checked()
    channel.get_by_role("radio", name="Correo electrónico").click()
    quiet_from.fill("21:00")
    quiet_to.fill("08:00")
    page.get_by_role("button", name="Guardar preferencias").click()

    page.wait_for_url(f"{link}?saved=yes")
    assert page.get_by_role("status").inner_text() == "Your preferences are saved."
    assert page.locator("html").get_attribute("lang") == "en"  # the language just chosen
    assert page.get_by_role("radio", name="Email").is_checked()
    assert not page.get_by_label("Short surveys about your visit").is_checked()
    assert page.get_by_label("Appointment confirmations and reminders").is_checked()
    assert page.get_by_label("From").input_value() == "21:00"
    assert page.get_by_label("Until").input_value() == "08:00"
    _fits_the_screen(page)
    page.screenshot(path=str(ARTIFACTS / "preferences-saved-en.png"), full_page=True)
    with rt.sessions() as session:
        stored = session.get_one(PatientPreference, PATIENT)
    assert (stored.language, stored.channel, stored.quiet_from, stored.quiet_to,
            stored.categories_off) == ("en", "email", "21:00", "08:00", "surveys")


def test_a_half_filled_quiet_window_is_announced_and_the_choices_kept(
    rt: Runtime, api_server: ApiServer, phone: Any
) -> None:
    link = rt.settings.preferences_link(PATIENT, "en", NOW)
    assert link is not None
    page = phone
    page.goto(link)
    page.get_by_label("Short surveys about your visit").uncheck()
    page.get_by_label("From").fill("21:00")

    with page.expect_response(link) as posted:
        page.get_by_role("button", name="Save preferences").click()

    assert posted.value.status == 422
    assert page.get_by_role("alert").inner_text() == (
        "Please give both times for quiet hours, and make them different.")
    assert not page.get_by_label("Short surveys about your visit").is_checked()
    assert page.get_by_label("From").input_value() == "21:00"
    assert page.get_by_label("Until").get_attribute("aria-invalid") == "true"
    _fits_the_screen(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "preferences-error-en.png"), full_page=True)
    with rt.sessions() as session:
        assert session.get(PatientPreference, PATIENT) is None


def test_an_expired_link_shows_a_plain_page_on_a_phone(
    rt: Runtime, api_server: ApiServer, phone: Any
) -> None:
    link = rt.settings.preferences_link(PATIENT, "en", NOW - timedelta(days=31))
    assert link is not None

    response = phone.goto(link)

    assert response is not None and response.status == 410
    assert phone.get_by_role("heading", level=1).inner_text() == "This link has expired"
    assert phone.locator("form, input").count() == 0
    _fits_the_screen(phone)
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "preferences-expired-en.png"), full_page=True)
