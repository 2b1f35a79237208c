"""The managers' dashboard on the demo's data: staff sign-in and its cookie, the figures against
`outreach report`, the drill-down behind each number, bad input, headers, and no patient
details on any page."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from outreach.api.app import create_app
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.demo import DEMO_FIXTURES, run_demo
from outreach.reports.outcomes import DIMENSIONS, FIGURES, HEADLINE, show
from outreach.reports.service import outcome_report, period
from outreach.staff.signin import COOKIE, seal
from tests.conftest import RuntimeFactory

TOKEN = "manager-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)  # two days after the demo's last visit
DEFAULT = period(date(2026, 2, 13), date(2026, 3, 12))  # 28 days to today
CARD = re.compile(r'<a class="card" href="/dashboard/appointments\?([^"]+)">'
                  r'<span class="value">([^<]+)</span><span class="label">([^<]+)</span>')
PLAIN_CARD = re.compile(r'<div class="card"><span class="value">([^<]+)</span>'
                        r'<span class="label">([^<]+)</span>')
ROW = re.compile(r'<tr><td class="text">Appointment/<wbr>([^<]+)</td>')
LINK = re.compile(r'href="(/dashboard/appointments\?[^"]+)">(\d+)<')


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's SQLite store: six appointments (fulfilled, no-show, cancelled by the patient,
    unreachable, moved by the patient, booked from the waitlist), SMS and email, a
    confirmation, an opt-out and a Task. Only read here."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, io.StringIO(), load_settings(database_url="sqlite:///unused.db"))
    return out / "outreach.db"


@pytest.fixture
def rt(make_runtime: RuntimeFactory, demo_db: Path) -> Runtime:
    return make_runtime(database_url=f"sqlite:///{demo_db}", clock=SimulatedClock(NOW),
                        admin_tokens=f"manager={TOKEN}")


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app(), follow_redirects=False)


def _text(response: Response) -> str:
    """The page's markup unescaped, whitespace collapsed."""
    return " ".join(html.unescape(response.text).split())


def _signed_out(response: Response) -> bool:
    return response.status_code == 303 and response.headers["location"] == "/dashboard/sign-in"


def _with_cookie(client: TestClient, value: str, path: str = "/dashboard") -> Response:
    response: Response = client.get(path, headers={"Cookie": f"{COOKIE}={value}"})
    return response


def _drill(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/dashboard/appointments?{query}", headers=AUTH)
    assert response.status_code == 200, response.text
    return [f"Appointment/{id_}" for id_ in ROW.findall(response.text)]


# Signing in


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard?from=banana",
                                  "/dashboard/appointments?figure=no_show"])
def test_signed_out_is_sent_to_the_sign_in_page(client: TestClient, path: str) -> None:
    assert _signed_out(client.get(path))
    page = client.get("/dashboard/sign-in")
    assert page.status_code == 200
    assert '<input id="token" name="token" type="password"' in page.text
    assert "set-cookie" not in page.headers


@pytest.mark.parametrize("token", ["not-the-token-0123456789", "", TOKEN[:-1], TOKEN + "x"])
def test_a_wrong_token_gets_401_and_no_cookie(client: TestClient, token: str) -> None:
    response = client.post("/dashboard/sign-in", data={"token": token})
    assert response.status_code == 401
    assert "That token is not valid." in response.text
    assert "set-cookie" not in response.headers
    assert not client.cookies
    assert _signed_out(client.get("/dashboard"))


def test_the_right_token_sets_a_strict_session_cookie(client: TestClient) -> None:
    response = client.post("/dashboard/sign-in", data={"token": f"  {TOKEN} "})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    (header,) = response.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    value, *flags = (part.strip() for part in rest.split(";"))
    assert name == COOKIE
    assert {f.lower() for f in flags} >= {"httponly", "samesite=strict", "path=/dashboard",
                                           "max-age=28800"}
    assert not any(f.lower() == "secure" for f in flags)  # plain http in tests
    assert TOKEN not in value and "manager" not in value  # encrypted, not just signed
    page = client.get("/dashboard")  # the client sends the cookie back
    assert page.status_code == 200
    assert "Signed in as manager" in page.text
    assert client.get("/dashboard/appointments?figure=no_show").status_code == 200

    out = client.post("/dashboard/sign-out")
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/sign-in"
    assert _signed_out(client.get("/dashboard"))


def test_the_cookie_is_secure_when_served_over_https(
    make_runtime: RuntimeFactory, demo_db: Path
) -> None:
    make_runtime(database_url=f"sqlite:///{demo_db}", clock=SimulatedClock(NOW),
                 admin_tokens=f"manager={TOKEN}", public_url="https://outreach.example.org")
    response = TestClient(create_app(), follow_redirects=False).post(
        "/dashboard/sign-in", data={"token": TOKEN})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower().split("; ")


def test_forged_old_and_future_cookies_are_refused(client: TestClient, rt: Runtime) -> None:
    now = datetime.now(UTC)
    assert _with_cookie(client, seal(rt.settings, "manager", now - timedelta(hours=7))
                        ).status_code == 200  # still within the working day
    other = load_settings(database_url="sqlite:///unused.db",
                          admin_tokens="manager=some-other-deployment-token")
    for forged in (
        seal(rt.settings, "manager", now - timedelta(hours=9)),  # expired after 8 h
        seal(rt.settings, "manager", now + timedelta(hours=1)),  # from the future
        seal(rt.settings, "mallory", now),  # a caller with no token
        seal(other, "manager", now),  # another deployment's key
        "garbage", "", "a" * 5000,
        seal(rt.settings, "manager", now)[:-4] + "AAAA",  # tampered
    ):
        assert _signed_out(_with_cookie(client, forged)), forged
        assert _signed_out(_with_cookie(client, forged, "/dashboard/appointments"))


def test_a_bearer_header_works_without_a_cookie(client: TestClient) -> None:
    assert client.get("/dashboard", headers=AUTH).status_code == 200
    assert client.get("/dashboard", headers={"Authorization": f"bearer {TOKEN}"}
                      ).status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        assert _signed_out(client.get("/dashboard", headers={"Authorization": wrong}))
    assert "set-cookie" not in client.get("/dashboard", headers=AUTH).headers


def test_rotating_the_admin_tokens_signs_everyone_out(
    client: TestClient, make_runtime: RuntimeFactory, demo_db: Path
) -> None:
    client.post("/dashboard/sign-in", data={"token": TOKEN})
    assert client.get("/dashboard").status_code == 200
    make_runtime(database_url=f"sqlite:///{demo_db}", clock=SimulatedClock(NOW),
                 admin_tokens="manager=a-brand-new-token-0123456789")  # same caller name
    assert _signed_out(client.get("/dashboard"))
    assert _signed_out(client.get("/dashboard", headers=AUTH))
    fresh = {"Authorization": "Bearer a-brand-new-token-0123456789"}
    assert client.get("/dashboard", headers=fresh).status_code == 200


def test_a_20kb_sign_in_form_is_refused(client: TestClient) -> None:
    response = client.post("/dashboard/sign-in", data={"token": "x" * 20_000})
    assert response.status_code == 413
    assert "set-cookie" not in response.headers
    as_json = client.post("/dashboard/sign-in", json={"token": TOKEN})
    assert as_json.status_code == 415 and "set-cookie" not in as_json.headers


# The figures


def _cards(page: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Counted figures (figure -> (value, drill-down query)) and the other cards (label ->
    value)."""
    linked = {}
    for query, value, _ in CARD.findall(page):
        figure = dict(pair.split("=", 1) for pair in html.unescape(query).split("&"))["figure"]
        linked[figure] = (value, html.unescape(query))
    plain = {html.unescape(label): html.unescape(value)
             for value, label in PLAIN_CARD.findall(page)}
    return linked, plain


def test_the_page_shows_the_figures_of_outreach_report(client: TestClient, rt: Runtime) -> None:
    page = client.get("/dashboard", headers=AUTH)
    assert page.status_code == 200
    assert 'name="from" value="2026-02-13"' in page.text  # the default: the last 28 days
    assert 'name="to" value="2026-03-12"' in page.text
    expected = outcome_report(rt, DEFAULT)
    assert (expected["appointments"], expected["no_show"], expected["reached"]) == (6, 1, 5)
    linked, plain = _cards(page.text)
    labels = dict(HEADLINE)
    for key, _ in HEADLINE:
        if key.endswith("_rate"):
            assert plain[labels[key]] == show(expected[key]), key
        else:
            assert linked[key][0] == str(expected[key]), key
    assert plain[f"SMS cost estimate ({expected['segments']} segments)"] == \
        f"{expected['cost']['amount']:.2f} {expected['cost']['currency']}"
    sides = expected["reached_vs_unreached"]
    assert f"figure=reached\">{sides['reached']['appointments']}<" in page.text
    assert f"figure=unreached\">{sides['unreached']['appointments']}<" in page.text


@pytest.mark.parametrize(("filters", "by"), [
    ({"channel": "sms"}, "language"), ({"language": "en"}, "step"), ({}, "channel"),
])
def test_filtered_figures_and_breakdown_equal_the_report(
    client: TestClient, rt: Runtime, filters: dict[str, str], by: str
) -> None:
    query = "&".join(f"{k}={v}" for k, v in {**filters, "by": by}.items())
    page = client.get(f"/dashboard?from=2026-03-01&to=2026-03-12&{query}", headers=AUTH)
    assert page.status_code == 200
    expected = outcome_report(rt, period(date(2026, 3, 1), date(2026, 3, 12)), filters)
    linked, _ = _cards(page.text)
    for figure, (value, _) in linked.items():
        assert value == str(expected[figure]), figure
    links = {tuple(sorted(parse_qsl(html.unescape(href).partition("?")[2]))): int(count)
             for href, count in LINK.findall(page.text)}
    groups = expected[f"by_{by}"]
    assert groups
    for group, figures in groups.items():
        for figure in ("appointments", "reached", "confirmed", "no_show"):
            params = {"from": "2026-03-01", "to": "2026-03-12", **filters, "by": by,
                      "figure": figure, by: group}
            assert links[tuple(sorted(params.items()))] == figures[figure], (group, figure)
    for name, value in filters.items():
        assert f'<option value="{value}" selected>' in page.text, name


def test_every_number_on_the_page_links_to_that_many_appointments(client: TestClient) -> None:
    for by in ("journey", "channel", "step"):
        page = client.get(f"/dashboard?by={by}", headers=AUTH).text
        links = LINK.findall(page) + [(f"/dashboard/appointments?{query}", value)
                                      for query, value, _ in CARD.findall(page)]
        assert len(links) >= 15
        for href, count in links:
            response = client.get(html.unescape(href), headers=AUTH)
            assert response.status_code == 200, href
            assert len(ROW.findall(response.text)) == int(count), href


def test_the_drill_down_lists_exactly_the_appointments_behind_a_figure(
    client: TestClient, rt: Runtime
) -> None:
    assert _drill(client, "figure=no_show") == ["Appointment/appt-ben"]
    reached = _drill(client, "figure=reached")
    assert sorted(reached) == ["Appointment/appt-ana", "Appointment/appt-ben",
                               "Appointment/appt-chloe", "Appointment/appt-fay",
                               "Appointment/wait-gus"]
    assert _drill(client, "figure=unreached") == ["Appointment/appt-dan"]
    # With a filter: Ben was reached by email only.
    assert _drill(client, "figure=no_show&channel=email") == ["Appointment/appt-ben"]
    assert _drill(client, "figure=no_show&channel=sms") == []
    by_sms = _drill(client, "figure=reached&channel=sms")
    assert "Appointment/appt-ben" not in by_sms
    assert len(by_sms) == outcome_report(rt, DEFAULT, {"channel": "sms"})["reached"] == 4
    page = client.get("/dashboard/appointments?figure=no_show&channel=sms&by=step",
                      headers=AUTH)
    assert "0 appointments: no show, 2026-02-13 to 2026-03-12, channel = sms" in _text(page)
    assert "None." in page.text
    back = re.search(r'<a href="(/dashboard\?[^"]+)">', page.text)
    assert back is not None
    assert dict(parse_qsl(html.unescape(back.group(1)).partition("?")[2])) == {
        "from": "2026-02-13", "to": "2026-03-12", "channel": "sms", "by": "step"}


def test_tasks_are_shown_in_the_hospitals_time_zone(
    make_runtime: RuntimeFactory, demo_db: Path
) -> None:
    make_runtime(database_url=f"sqlite:///{demo_db}", clock=SimulatedClock(NOW),
                 admin_tokens=f"manager={TOKEN}", timezone="America/New_York")
    page = TestClient(create_app()).get("/dashboard", headers=AUTH).text
    # Chloe's free-text reply arrived 2026-03-03 09:20 UTC: 04:20 in New York (EST).
    assert "<tr><td>2026-03-03 04:20</td>" in page
    assert "(America/New_York)" in page


# Bad input


@pytest.mark.parametrize(("query", "says"), [
    ("journey=nope", "unknown journey 'nope'; in this period: appointment-reminders"),
    ("channel=fax", "unknown channel 'fax'; in this period: email, none, sms"),
    ("by=nope", "unknown breakdown 'nope'; in this period: " + ", ".join(DIMENSIONS)),
    ("from=2026-03-12&to=2026-03-01", "2026-03-01 is before"),
    ("from=2024-01-01&to=2026-01-01", "at most 366 days"),
    ("to=0001-01-01", "0001-01-01 is outside"),
    ("to=0001-01-20", "0001-01-20 is outside"),
    ("from=0001-01-01&to=2026-01-01", "0001-01-01 is outside"),
    ("from=9999-12-31&to=9999-12-31", "9999-12-31 is outside"),
    ("to=9999-12-31", "9999-12-31 is outside"),
    ("from=9999-12-31", "9999-12-31 is outside"),
    ("from=banana", "from 'banana' is not a date"),
    ("to=10000-01-01", "to '10000-01-01' is not a date"),
    ("to=2026-02-30", "to '2026-02-30' is not a date"),
])
def test_bad_input_gets_a_400_page_with_the_message(
    client: TestClient, query: str, says: str
) -> None:
    paths = ["/dashboard"] + ([] if query.startswith("by=") else ["/dashboard/appointments"])
    for path in paths:
        response = client.get(f"{path}?{query}", headers=AUTH)
        assert response.status_code == 400, (path, response.text)
        assert says in _text(response), path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["x-frame-options"] == "DENY"


def test_an_unknown_figure_names_the_figures(client: TestClient) -> None:
    response = client.get("/dashboard/appointments?figure=revenue", headers=AUTH)
    assert response.status_code == 400
    assert "unknown figure 'revenue'; in this period: " + ", ".join(sorted(FIGURES)) \
        in _text(response)


def test_a_cleared_date_field_means_the_default(client: TestClient) -> None:
    """The form sends `from=` when a manager empties the field."""
    response = client.get("/dashboard?from=&to=2026-03-10&journey=&by=journey", headers=AUTH)
    assert response.status_code == 200
    assert 'name="from" value="2026-02-11"' in response.text


def test_markup_in_a_filter_value_is_escaped(client: TestClient) -> None:
    response = client.get("/dashboard?journey=<img src=x onerror=alert(1)>", headers=AUTH)
    assert response.status_code == 400
    assert "<img src=x" not in response.text and "&lt;img src=x" in response.text


# Headers and privacy


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/appointments?figure=reached",
                                  "/dashboard/sign-in", "/dashboard?journey=nope"])
def test_every_page_carries_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path, headers=AUTH)
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert "script-src" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in response.text.lower()


def _patient_details() -> tuple[set[str], set[str]]:
    """Words (names) and strings (contacts, participant displays, SMS bodies) of the demo."""
    words: set[str] = set()
    strings: set[str] = set()
    for file in DEMO_FIXTURES.glob("*.json"):
        resource: dict[str, Any] = json.loads(file.read_text("utf-8"))
        for name in resource.get("name", []):
            words.update([name["family"], *name.get("given", [])])
        strings.update(t["value"] for t in resource.get("telecom", []))
        strings.update(p["actor"]["display"] for p in resource.get("participant", [])
                       if p["actor"]["reference"].startswith("Patient/"))
    replies = json.loads((DEMO_FIXTURES / "replies" / "sms.json").read_text("utf-8"))
    strings.update(r["Body"] for r in replies if len(r["Body"]) > 3)  # not a bare score "2"
    strings.update(r["From"] for r in replies)
    return words, strings


def test_no_patient_names_or_contacts_on_any_page(client: TestClient) -> None:
    words, strings = _patient_details()
    assert {"García", "Okafor", "Ana", "+15555550101", "Ben Okafor"} <= words | strings
    pages = [client.get(f"/dashboard?by={by}", headers=AUTH) for by in DIMENSIONS]
    pages += [client.get(f"/dashboard/appointments?figure={figure}", headers=AUTH)
              for figure in FIGURES]
    for response in pages:
        assert response.status_code == 200
        shown = _text(response)
        charts = [base64.b64decode(uri).decode() for uri in
                  re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', response.text)]
        for text in (shown, *charts):
            for word in words:
                assert not re.search(rf"\b{re.escape(word)}\b", text), word
            for value in strings:
                assert value not in text, value
    everyone = pages[len(DIMENSIONS) + list(FIGURES).index("appointments")]
    assert "<td class=\"text\">Patient/<wbr>ana</td>" in everyone.text  # ids, only ids
