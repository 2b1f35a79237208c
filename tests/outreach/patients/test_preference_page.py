"""The patient preference page at /p/{token}, through the real app on Postgres: what a patient
sees, what a save changes (our tables, the audit log, the write-back outbox), and what a bad
link or a bad form gets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connector.consent import OUTREACH_CATEGORY
from outreach.api.app import create_app
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.store.models import AuditEntry, PatientPreference, Writeback
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import patient
from tests.support.fhir_server import FhirTestServer

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PATIENT = "Patient/pat-1"
SECRET = "x" * 40
PUBLIC = "https://outreach.example.org"
HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
}
# What a browser posts for an untouched page: every category ticked, no channel preference.
ALL_ON = {"channel": "any", "receive-appointments": "yes", "receive-surveys": "yes",
          "receive-campaigns": "yes", "quiet_from": "", "quiet_to": ""}


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, clock: SimulatedClock) -> Runtime:
    return make_runtime(clock=clock, preferences_secret=SECRET, public_url=PUBLIC,
                        organization_name="St Example")


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app(), follow_redirects=False)


def _path(rt: Runtime, language: str = "en", who: str = PATIENT) -> str:
    link = rt.settings.preferences_link(who, language, rt.clock.now())
    assert link is not None and link.startswith(f"{PUBLIC}/p/")
    return link.removeprefix(PUBLIC)


@dataclass
class Page:
    """What a person (or a screen reader) gets from the HTML: text, notices, form controls."""

    lang: str | None = None
    text: list[str] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    inputs: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def body(self) -> str:
        return " ".join(" ".join(self.text).split())

    def checked(self, name: str) -> list[str]:
        return [str(i.get("value")) for i in self.inputs
                if i.get("name") == name and "checked" in i]

    def value(self, name: str) -> str | None:
        (found,) = [i.get("value") for i in self.inputs if i.get("name") == name]
        return found


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._role: str | None = None
        self._skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.page.lang = attributes.get("lang")
        elif tag == "input":
            self.page.inputs.append(attributes)
        elif tag in ("style", "title"):
            self._skip = True
        role = attributes.get("role")
        if role:
            self._role = role
            self.page.roles.setdefault(role, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip = False
        if tag == "p":
            self._role = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.page.text.append(data)
        if self._role is not None:
            self.page.roles[self._role][-1] += data.strip()


def _read(response: httpx.Response) -> Page:
    assert response.headers["content-type"].startswith("text/html")
    reader = _Reader()
    reader.feed(response.text)
    return reader.page


def _rows(rt: Runtime) -> tuple[list[AuditEntry], list[Writeback]]:
    with rt.sessions() as session:
        return (list(session.scalars(select(AuditEntry).order_by(AuditEntry.id))),
                list(session.scalars(select(Writeback).order_by(Writeback.id))))


def _stored(rt: Runtime, who: str = PATIENT) -> PatientPreference | None:
    with rt.sessions() as session:
        return session.get(PatientPreference, who)


def _assert_page_headers(response: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, name
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "form-action 'self'" in policy and "script-src" not in policy


def test_the_page_is_in_the_language_of_the_link(client: TestClient, rt: Runtime) -> None:
    spanish = _read(client.get(_path(rt, "es")))
    assert spanish.lang == "es"
    assert "Sus preferencias de mensajes" in spanish.body
    assert "Elija cómo puede contactarle St Example" in spanish.body
    assert "Guardar preferencias" in spanish.body and "Save preferences" not in spanish.body
    assert spanish.checked("language") == ["es"]

    english = _read(client.get(_path(rt, "en")))
    assert english.lang == "en"
    assert "Your message preferences" in english.body and "Guardar" not in english.body
    assert english.checked("language") == ["en"]
    # Nothing chosen yet: every kind of message on, no channel preference, no quiet hours.
    assert english.checked("channel") == ["any"]
    assert english.checked("receive-appointments") == ["yes"]
    assert english.checked("receive-surveys") == ["yes"]
    assert english.checked("receive-campaigns") == ["yes"]
    assert (english.value("quiet_from"), english.value("quiet_to")) == ("", "")
    assert "This link works until 2026-04-01." in english.body
    assert english.roles == {}  # no notice before anything was posted


def test_a_link_in_a_language_the_page_lacks_is_shown_and_marked_as_english(
    client: TestClient, rt: Runtime
) -> None:
    """A French-speaking patient (per the EHR) gets the English page, and `lang` says so, so a
    screen reader does not read English words with French rules."""
    path = _path(rt, "fr")
    page = _read(client.get(path))
    assert page.lang == "en" and "Your message preferences" in page.body
    assert page.checked("language") == ["en"]
    # Posting the page back untouched pins no language over the EHR's.
    response = client.post(path, data={**ALL_ON, "language": "en"})
    assert response.headers["location"] == f"{path}?saved=no"
    assert _stored(rt) is None


def test_a_save_redirects_and_the_page_then_shows_the_choices(
    client: TestClient, rt: Runtime
) -> None:
    path = _path(rt, "en")
    form = {**ALL_ON, "language": "es", "channel": "email", "receive-surveys": "",
            "quiet_from": "21:00", "quiet_to": "08:00"}
    del form["receive-surveys"]  # an unticked box is not posted at all

    response = client.post(path, data=form)

    assert response.status_code == 303
    assert response.headers["location"] == f"{path}?saved=yes"
    _assert_page_headers(response)
    page = _read(client.get(response.headers["location"]))
    assert page.lang == "es"  # the patient's choice now, over the link's language
    assert page.roles == {"status": ["Sus preferencias se han guardado."]}
    assert page.checked("language") == ["es"]
    assert page.checked("channel") == ["email"]
    assert page.checked("receive-surveys") == []
    assert page.checked("receive-appointments") == ["yes"]
    assert page.checked("receive-campaigns") == ["yes"]
    assert (page.value("quiet_from"), page.value("quiet_to")) == ("21:00", "08:00")
    stored = _stored(rt)
    assert stored is not None
    assert (stored.language, stored.channel, stored.quiet_from, stored.quiet_to,
            stored.categories_off) == ("es", "email", "21:00", "08:00", "surveys")


def test_a_save_is_audited_and_queued_for_the_ehr(client: TestClient, rt: Runtime) -> None:
    path = _path(rt, "en")
    form = {**ALL_ON, "language": "es", "channel": "sms", "quiet_from": "22:00",
            "quiet_to": "07:30"}
    del form["receive-surveys"], form["receive-campaigns"]

    assert client.post(path, data=form).status_code == 303

    (audit,), rows = _rows(rt)
    assert (audit.actor, audit.action, audit.target) == (
        "patient (preference link)", "preferences.update", PATIENT)
    assert audit.detail == {"language": [None, "es"], "channel": [None, "sms"],
                            "quiet_from": [None, "22:00"], "quiet_to": [None, "07:30"],
                            "categories_off": [None, "campaigns,surveys"]}
    assert sorted(r.resource_type for r in rows) == ["Communication", "Consent", "Consent"]
    assert all(r.state == "pending" for r in rows)
    enqueue = rt.enqueue
    assert isinstance(enqueue, CollectingEnqueuer)
    assert sorted(enqueue.writebacks) == sorted(r.id for r in rows)
    consents = {_category(r.resource): r.resource for r in rows if r.resource_type == "Consent"}
    assert set(consents) == {"campaigns", "surveys"}
    for consent in consents.values():
        assert consent["patient"] == {"reference": PATIENT}
        assert consent["policyRule"]["coding"][0]["code"] == "OPTOUT"
        assert consent["provision"]["type"] == "deny"
    (note,) = [r.resource for r in rows if r.resource_type == "Communication"]
    assert note["subject"] == {"reference": PATIENT}
    said = note["payload"][0]["contentString"]
    assert "language: not set → es" in said and "preferred channel: not set → sms" in said
    assert "quiet hours from: not set → 22:00" in said
    assert "quiet hours until: not set → 07:30" in said


def test_opting_back_in_writes_a_permit_and_no_communication(
    client: TestClient, rt: Runtime
) -> None:
    path = _path(rt, "en")
    off = {**ALL_ON, "language": "en"}
    del off["receive-surveys"]
    client.post(path, data=off)
    _, before = _rows(rt)

    client.post(path, data={**ALL_ON, "language": "en"})

    audits, rows = _rows(rt)
    (added,) = rows[len(before):]
    assert added.resource_type == "Consent"  # only a category changed: no Communication
    assert _category(added.resource) == "surveys"
    assert added.resource["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert added.resource["provision"]["type"] == "permit"
    assert audits[-1].detail == {"categories_off": ["surveys", None]}


def _category(consent: dict[str, Any]) -> str:
    (code,) = [c["code"] for concept in consent["category"] for c in concept.get("coding", [])
               if c["system"] == OUTREACH_CATEGORY]
    return str(code)


def test_saving_the_same_again_changes_nothing(client: TestClient, rt: Runtime) -> None:
    path = _path(rt, "es")
    form = {**ALL_ON, "language": "es", "channel": "email"}
    assert client.post(path, data=form).headers["location"].endswith("?saved=yes")
    rows_before = _rows(rt)
    queued = list(rt.enqueue.writebacks)  # type: ignore[attr-defined]

    again = client.post(path, data=form)

    assert again.status_code == 303 and again.headers["location"] == f"{path}?saved=no"
    assert [len(r) for r in _rows(rt)] == [len(r) for r in rows_before]
    assert rt.enqueue.writebacks == queued  # type: ignore[attr-defined]
    page = _read(client.get(again.headers["location"]))
    assert page.roles == {"status": ["No hubo cambios."]}


def test_saving_the_untouched_page_changes_nothing(client: TestClient, rt: Runtime) -> None:
    """The language radio is preset to the link's language; posting it back as it is, is not a
    choice, and the EHR must not be told the patient changed their language."""
    path = _path(rt, "es")
    page = _read(client.get(path))
    form = {**ALL_ON, "language": page.checked("language")[0]}

    response = client.post(path, data=form)

    assert response.headers["location"] == f"{path}?saved=no"
    assert _rows(rt) == ([], [])
    assert _stored(rt) is None


def test_an_expired_link_says_so_in_plain_words(
    client: TestClient, rt: Runtime, clock: SimulatedClock
) -> None:
    path = _path(rt, "en")
    clock.advance(timedelta(days=30, seconds=1))

    response = client.get(path)

    assert response.status_code == 410
    _assert_page_headers(response)
    page = _read(response)
    assert "This link has expired" in page.body
    assert "The next message we send you will have a new one" in page.body
    assert page.inputs == []  # no form behind a dead link
    posted = client.post(path, data={**ALL_ON, "language": "es"})
    assert posted.status_code == 410
    assert _stored(rt) is None and _rows(rt) == ([], [])


@pytest.mark.parametrize("mangle", [
    lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # signature
    lambda token: ("A" if token[0] != "A" else "B") + token[1:],  # payload
    lambda token: "not-a-token",
    lambda token: "x" * 5000,
])
def test_a_forged_link_is_not_found(client: TestClient, rt: Runtime, mangle: Any) -> None:
    token = _path(rt).removeprefix("/p/")
    forged = f"/p/{mangle(token)}"

    response = client.get(forged)

    assert response.status_code == 404
    _assert_page_headers(response)
    assert "This link is not valid" in _read(response).body
    assert client.post(forged, data={**ALL_ON, "language": "es"}).status_code == 404
    assert _rows(rt) == ([], [])


def test_a_link_made_with_another_secret_is_not_found(client: TestClient, rt: Runtime) -> None:
    from outreach.core.links import sign

    token = sign(b"y" * 40, PATIENT, "en", NOW, timedelta(days=30))
    assert client.get(f"/p/{token}").status_code == 404


def test_without_a_secret_the_page_is_off(
    make_runtime: RuntimeFactory, clock: SimulatedClock
) -> None:
    signed_elsewhere = make_runtime(clock=clock, preferences_secret=SECRET, public_url=PUBLIC)
    path = _path(signed_elsewhere)
    make_runtime(clock=clock, public_url=PUBLIC)  # the same service, the page switched off
    client = TestClient(create_app(), follow_redirects=False)

    response = client.get(path)

    assert response.status_code == 404
    assert "This page is not available" in _read(response).body
    assert client.post(path, data={**ALL_ON, "language": "es"}).status_code == 404


def test_a_body_over_16_kb_is_refused_and_nothing_is_saved(
    client: TestClient, rt: Runtime
) -> None:
    path = _path(rt)
    body = "language=es&channel=email&note=" + "a" * 20_000

    response = client.post(path, content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})

    assert response.status_code == 413
    _assert_page_headers(response)
    assert _read(response).roles.get("alert") == [
        "Something in the form was not valid. Please try again."]
    assert _stored(rt) is None and _rows(rt) == ([], [])


def test_a_json_body_is_refused(client: TestClient, rt: Runtime) -> None:
    response = client.post(_path(rt), json={"language": "es", "channel": "email"})
    assert response.status_code == 415
    assert _stored(rt) is None


def test_a_body_that_is_not_utf8_is_refused(client: TestClient, rt: Runtime) -> None:
    response = client.post(_path(rt), content=b"language=es&channel=\xff\xfe",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert _stored(rt) is None


def test_half_a_quiet_window_is_refused_with_an_alert_and_nothing_saved(
    client: TestClient, rt: Runtime
) -> None:
    path = _path(rt, "es")
    form = {**ALL_ON, "language": "es", "channel": "email", "quiet_from": "21:00"}
    del form["receive-surveys"]

    response = client.post(path, data=form)

    assert response.status_code == 422
    _assert_page_headers(response)
    page = _read(response)
    assert page.roles == {"alert": [
        "Indique las dos horas del horario sin mensajes, y que sean distintas."]}
    assert _stored(rt) is None and _rows(rt) == ([], [])
    # What the patient chose is still there to correct, not reset to what is stored.
    assert page.checked("channel") == ["email"]
    assert page.checked("receive-surveys") == []
    assert page.value("quiet_from") == "21:00"


@pytest.mark.parametrize("change", [
    {"language": "fr"}, {"channel": "fax"}, {"quiet_from": "25:00", "quiet_to": "08:00"},
    {"quiet_from": "08:00", "quiet_to": "08:00"},
])
def test_other_bad_values_are_refused_and_nothing_saved(
    client: TestClient, rt: Runtime, change: dict[str, str]
) -> None:
    response = client.post(_path(rt), data={**ALL_ON, "language": "en", **change})
    assert response.status_code == 422
    assert "alert" in _read(response).roles
    assert _stored(rt) is None and _rows(rt) == ([], [])


def test_no_patient_data_in_the_page_or_the_logs(
    make_runtime: RuntimeFactory, clock: SimulatedClock, fhir: FhirTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = make_runtime(clock=clock, preferences_secret=SECRET, public_url=PUBLIC,
                      fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(given="Rosalind", email="rosalind.q@example.org",
                                   mobile="+15555550199", language="es"))
    who = f"Patient/{pat['id']}"
    path = _path(rt, "es", who)
    client = TestClient(create_app(), follow_redirects=False)
    caplog.set_level(logging.DEBUG)

    shown = [client.get(path).text]
    form = {**ALL_ON, "language": "en", "channel": "email"}
    saved = client.post(path, data=form)
    shown.append(client.get(saved.headers["location"]).text)
    shown.append(client.post(path, data={**form, "quiet_from": "21:00"}).text)

    server_logs = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(r.getMessage() for r in server_logs)
    for private in ("Rosalind", "rosalind.q@example.org", "5555550199"):
        assert all(private not in html for html in shown), private
        assert private not in logged, private
    assert path.removeprefix("/p/") not in logged  # the link is the patient's key
    assert f"preferences of {who} changed" in logged  # ids only
