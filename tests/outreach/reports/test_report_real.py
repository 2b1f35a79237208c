"""The outcome report on the real parts: a week of appointments booked in the FHIR server, sent
by SMS (Twilio-shaped server) and email (SMTP), answered through signed Twilio webhooks, their
outcomes recorded by the EHR and ingested; then the report by the service, the CLI and the API,
and `--publish` as a Measure and MeasureReport the FHIR server accepts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from channels.segments import sms_segments
from connector.client import FhirClient
from connector.measure import GROUP_SYSTEM, MEASURE_URL
from outreach import runtime as runtime_module
from outreach.cli import app
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import get_settings
from outreach.intake.ingest import ingest
from outreach.reports.facts import load_appointments
from outreach.reports.service import outcome_report, period
from outreach.store.models import ScheduledStep
from outreach.worker import jobs
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

ZONE = "America/New_York"
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
FIRST = NOW.astimezone(ZoneInfo(ZONE)).date()  # the booking day (07:00 or 08:00 local)
LAST = FIRST + timedelta(days=6)
CLINIC = "+15555550100"
TOKEN = "report-reader-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICE = "http://terminology.hl7.org/CodeSystem/service-type"

# Two journeys on one trigger, split by service type: dental replies can cancel in the EHR.
JOURNEY = """
journey: {name}
trigger:
  resource: Appointment
  on: [created, updated]
  when: "status = 'booked' and start > now() and serviceType.coding.where(code = 'dental').{test}"
anchor: start
cancel_when: "status in ('cancelled' | 'noshow' | 'entered-in-error')"
replan_on_change: [start]
steps:
  - {{id: booked, at: immediately, channel: [sms, email], template: appointment-booked,
     category: notification, cap_exempt: true}}
  - {{id: reminder-72h, at: -72h, channel: [sms, email], template: appointment-reminder,
     replies: {{C: confirm, X: {cancel}}}}}
"""
CHECKUP, DENTAL = "checkup-reminders", "dental-reminders"


@dataclass(frozen=True)
class Person:
    name: str
    journey: str  # CHECKUP or DENTAL
    mobile: str | None = None
    email: str | None = None
    landline: str | None = None
    language: str | None = None
    hours: int = 0  # the appointment starts 5 days + this many hours after NOW
    given: str | None = None


ANA = Person("ana", CHECKUP, mobile="+15555550201")
BEN = Person("ben", CHECKUP, mobile="+15555550202", hours=1, given="Benoît")  # î: UCS-2
CARA = Person("cara", CHECKUP, email="cara@example.org", hours=2)
DAN = Person("dan", CHECKUP, landline="+15555550204", hours=3)
EVE = Person("eve", DENTAL, mobile="+15555550205", language="es", hours=4)
FAY = Person("fay", DENTAL, mobile="+15555550206", hours=5)
GUS = Person("gus", DENTAL, mobile="+15555550207", hours=6)
WEEK = (ANA, BEN, CARA, DAN, EVE, FAY, GUS)
# Enrolled and sent a booking SMS in the period, but the visit is after it.
HAL = Person("hal", CHECKUP, mobile="+15555550208", hours=4 * 24)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "journeys"
    folder.mkdir()
    for name, test, cancel in ((CHECKUP, "empty()", "cancel"),
                               (DENTAL, "exists()", "cancel-appointment")):
        (folder / f"{name}.yaml").write_text(JOURNEY.format(name=name, test=test, cancel=cancel))
    return folder


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       smtp: SmtpServer, clock: SimulatedClock, api_server: ApiServer, rules_dir: Path) -> Runtime:
    return make_runtime(
        rules_dir=rules_dir, clock=clock, fhir_base_url=fhir.base_url, public_url=api_server.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100, timezone=ZONE,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_from="reminders@hospital.example",
        organization_name="St Example", admin_tokens=f"reports={TOKEN}")


def _fhir(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _book(rt: Runtime, person: Person, status: str = "booked") -> dict[str, Any]:
    resource = patient(email=person.email, mobile=person.mobile,
                       given=person.given or person.name.title(), language=person.language)
    if person.landline:
        resource["telecom"].append({"system": "phone", "value": person.landline, "use": "home"})
    pat, _ = _fhir(rt).create(resource)
    appt = appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5, hours=person.hours),
                       status=status)
    dental = person.journey == DENTAL
    appt["serviceType"] = [{"coding": [{"system": SERVICE, "code": "dental" if dental else "57",
                                        "display": "Dental" if dental else "Checkup"}]}]
    if dental:
        appt["participant"].append({"actor": {"reference": "Practitioner/molar",
                                              "display": "Dr Molar"}, "status": "accepted"})
    created, _ = _fhir(rt).create(appt)
    ingest(rt, created, source="test")
    return created


def _reply(rt: Runtime, api: ApiServer, person: Person, body: str) -> str:
    assert person.mobile is not None
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(person.mobile, CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)
    return response.text


def _record_outcome(rt: Runtime, appt: dict[str, Any], status: str) -> None:
    """The EHR records the visit; we ingest the new version as the poller would."""
    current = _fhir(rt).read("Appointment", appt["id"])
    updated = _fhir(rt).update({**current, "status": status})
    ingest(rt, updated, source="test")


def _texts_to(twilio: TwilioServer, person: Person) -> list[dict[str, Any]]:
    return [m for m in twilio.messages if m["to"] == person.mobile]


def _week(rt: Runtime, api: ApiServer, twilio: TwilioServer, clock: SimulatedClock,
          ) -> dict[str, dict[str, Any]]:
    """Book, remind, hear back and record the outcomes; the appointments by name."""
    booked = {p.name: _book(rt, p) for p in (*WEEK, HAL)}
    _book(rt, Person("ivy", CHECKUP, mobile="+15555550209"), status="proposed")  # not enrolled
    drain(rt)
    with rt.sessions() as session:
        due = max(session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "reminder-72h", ScheduledStep.due_at < NOW + timedelta(
                days=3))))
    clock.set(due)
    jobs.sweep(rt)
    drain(rt)
    fay_booked, ben_reminder = _texts_to(twilio, FAY)[0], _texts_to(twilio, BEN)[-1]
    assert twilio.status_callback(fay_booked, "undelivered", "30003").status_code == 204
    assert twilio.status_callback(ben_reminder, "delivered").status_code == 204
    drain(rt)
    assert "confirmed" in _reply(rt, api, ANA, "C")
    assert "confirmed" in _reply(rt, api, GUS, "yes")
    assert "cancelada" in _reply(rt, api, EVE, "no puedo ir")  # cancelled in the EHR
    assert "no more text messages" in _reply(rt, api, FAY, "STOP")
    assert _reply(rt, api, BEN, "😀🙏").endswith("<Response/>")  # nothing to read
    clock.set(NOW + timedelta(days=8))
    for name, status in (("ana", "fulfilled"), ("ben", "noshow"), ("cara", "arrived"),
                         ("dan", "noshow"), ("gus", "fulfilled")):
        _record_outcome(rt, booked[name], status)
    drain(rt)
    return booked


def _figures(**values: Any) -> dict[str, Any]:
    """The headline figures, from the counts; the rates follow docs/metrics.md. Every
    cancellation here is the patient's, asked by reply (eve)."""
    reached, fulfilled, no_show = values["reached"], values["fulfilled"], values["no_show"]

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "appointments": values["appointments"], "reached": reached,
        "unreached": values["appointments"] - reached, "confirmed": values["confirmed"],
        "cancelled": values["cancelled"], "cancelled_by_patient": values["cancelled"],
        "cancel_requests_by_reply": values["cancelled"], "fulfilled": fulfilled,
        "no_show": no_show, "no_show_rate": rate(no_show, no_show + fulfilled),
        "confirmation_rate": rate(values["confirmed"], reached),
        "response_rate": rate(values["responded"], reached), "opt_outs": values["opt_outs"],
        "opt_out_rate": rate(values["opt_outs"], reached),
    }


ALL = _figures(appointments=7, reached=6, confirmed=2, cancelled=1, fulfilled=3, no_show=2,
               responded=4, opt_outs=1)  # ana, gus confirmed; eve cancelled; fay STOP
BY_JOURNEY = {
    CHECKUP: _figures(appointments=4, reached=3, confirmed=1, cancelled=0, fulfilled=2,
                      no_show=2, responded=1, opt_outs=0),  # ana, ben, cara; dan unreached
    DENTAL: _figures(appointments=3, reached=3, confirmed=1, cancelled=1, fulfilled=1,
                     no_show=0, responded=3, opt_outs=1),  # eve, fay, gus
}
BY_CHANNEL = {
    "email": _figures(appointments=1, reached=1, confirmed=0, cancelled=0, fulfilled=1,
                      no_show=0, responded=0, opt_outs=0),  # cara
    "none": _figures(appointments=1, reached=0, confirmed=0, cancelled=0, fulfilled=0,
                     no_show=1, responded=0, opt_outs=0),  # dan
    "sms": _figures(appointments=5, reached=5, confirmed=2, cancelled=1, fulfilled=2,
                    no_show=1, responded=4, opt_outs=1),  # ana, ben, eve, fay, gus
}
HEADLINE_KEYS = ("appointments", "reached", "confirmed", "cancelled_by_patient", "fulfilled",
                 "no_show", "no_show_rate", "confirmation_rate", "opt_outs", "messages",
                 "by_journey")


def test_a_week_of_outreach_gives_exactly_the_expected_outcomes(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, smtp: SmtpServer,
    clock: SimulatedClock
) -> None:
    booked = _week(rt, api_server, twilio, clock)
    result = outcome_report(rt, period(FIRST, LAST))
    assert {key: result[key] for key in ALL} == ALL
    assert result["by_journey"] == BY_JOURNEY
    assert result["by_channel"] == BY_CHANNEL
    assert result["reached_vs_unreached"] == {
        "reached": _figures(appointments=6, reached=6, confirmed=2, cancelled=1, fulfilled=3,
                            no_show=1, responded=4, opt_outs=1),
        "unreached": _figures(appointments=1, reached=0, confirmed=0, cancelled=0, fulfilled=0,
                              no_show=1, responded=0, opt_outs=0),
    }
    assert result["unreached_reasons"] == {"no channel the recipient can receive": 1}
    assert {k: v["appointments"] for k, v in result["by_language"].items()} == {
        "en": 5, "es": 1, "unknown": 1}
    assert {k: v["appointments"] for k, v in result["by_practitioner"].items()} == {
        "Dr Molar": 3, "unknown": 4}
    assert {k: v["appointments"] for k, v in result["by_service_type"].items()} == {
        "Checkup": 4, "Dental": 3}
    assert {k: v["appointments"] for k, v in result["by_step"].items()} == {
        f"{CHECKUP}/booked": 3, f"{CHECKUP}/reminder-72h": 3, "none sent": 1,
        f"{DENTAL}/booked": 3, f"{DENTAL}/reminder-72h": 3}
    assert list(result["by_location"]) == ["Main Street Clinic"]

    # Every message tried in the period, about these appointments or not (hal's visit is later):
    # bookings (6 SMS, 1 email) on the first day, reminders (5 SMS, 1 email) on the third.
    assert result["messages"] == {"email": 2, "sms": 11}
    assert len(twilio.messages) == 11 and len(smtp.messages) == 2
    segments = sum(sms_segments(m["body"]) for m in twilio.messages)
    assert result["segments"] == segments
    # Benoît's texts are UCS-2 (70 characters a segment, 67 when split): billed as several.
    assert all(sms_segments(m["body"]) > 1 for m in _texts_to(twilio, BEN))
    # The other texts take one segment each, but Eve's Spanish reminder (C, R or X) may take
    # two, by how long the date's words are.
    eve = [sms_segments(m["body"]) for m in _texts_to(twilio, EVE)]
    assert len(eve) == 2 and set(eve) <= {1, 2}
    assert segments == 7 + sum(eve) + sum(-(-len(m["body"]) // 67) for m in _texts_to(twilio, BEN))
    assert result["cost"] == {"amount": round(segments * 0.0083, 4), "currency": "USD",
                              "price_per_segment": 0.0083}
    per_day = {(row["day"], row["channel"]): row["messages"] for row in result["messages_per_day"]}
    third = (FIRST + timedelta(days=2)).isoformat()
    assert per_day == {(FIRST.isoformat(), "email"): 1, (FIRST.isoformat(), "sms"): 6,
                       (third, "email"): 1, (third, "sms"): 5}
    assert result["delivery_failures"] == {"sms 30003": 1}
    assert result["surveys"]["answers"] == 0 and result["surveys"]["nps"] is None

    # Per message, what the provider reported: only a final report says delivered or not.
    zone = ZoneInfo(ZONE)
    with rt.sessions() as session:
        facts = {f.patient: f for f in load_appointments(
            session, datetime.combine(FIRST, time(0), zone),
            datetime.combine(LAST + timedelta(days=1), time(0), zone))}
    delivered = {(name, m.step): m.delivered for name in ("ben", "fay", "cara")
                 for m in facts[booked[name]["participant"][0]["actor"]["reference"]].messages}
    assert delivered == {("ben", "booked"): None, ("ben", "reminder-72h"): True,
                         ("fay", "booked"): False, ("fay", "reminder-72h"): None,
                         ("cara", "booked"): None, ("cara", "reminder-72h"): None}
    # The EHR's record of eve's cancellation says the patient did it.
    eve = _fhir(rt).read("Appointment", booked["eve"]["id"])
    assert eve["status"] == "cancelled"
    assert eve["cancelationReason"]["coding"][0]["code"] == "pat"
    # A filter narrows the same figures to one journey; the period before is empty, not an error.
    dental = outcome_report(rt, period(FIRST, LAST), {"journey": DENTAL})
    assert {key: dental[key] for key in ALL} == BY_JOURNEY[DENTAL]
    before = outcome_report(rt, period(FIRST - timedelta(days=14), FIRST - timedelta(days=8)))
    assert (before["appointments"], before["no_show_rate"], before["messages"]) == (0, None, {})


def test_the_period_is_whole_local_days_whatever_offset_the_ehr_writes(rt: Runtime) -> None:
    """Appointments just inside and just outside a week of local days (America/New_York), some
    with their start written in a far offset, so its text date is another day than the local."""
    zone = ZoneInfo(ZONE)
    first, last = FIRST + timedelta(days=7), FIRST + timedelta(days=13)

    def at(day: date, hour: int, minute: int = 0, offset: int | None = None) -> str:
        moment = datetime.combine(day, time(hour, minute), zone)
        if offset is None:
            return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return moment.astimezone(timezone(timedelta(hours=offset))).isoformat()

    starts = {
        "first-midnight": at(first, 0), "last-23-59": at(last, 23, 59),
        "first-00-30-at-minus-10": at(first, 0, 30, offset=-10),  # written the day before
        "last-noon-at-plus-14": at(last, 12, offset=14),  # written the day after
        "out-before": at(first - timedelta(days=1), 23, 59),
        "out-after": at(last + timedelta(days=1), 0),
        "out-after-at-minus-10": at(last + timedelta(days=1), 0, 1, offset=-10),
    }
    for name, start in starts.items():
        pat, _ = _fhir(rt).create(patient(email=f"{name}@example.org"))
        appt = appointment(f"Patient/{pat['id']}", NOW + timedelta(days=9))
        appt["start"] = start
        appt["end"] = start  # the report reads the start only
        appt["participant"][1]["actor"]["display"] = name
        created, _ = _fhir(rt).create(appt)
        ingest(rt, created, source="test")
    result = outcome_report(rt, period(first, last))
    assert sorted(result["by_location"]) == sorted(n for n in starts if not n.startswith("out"))
    assert result["appointments"] == 4 and result["unreached"] == 4


# --- the command line and the API ---------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, rt: Runtime, fhir: FhirTestServer,
        rules_dir: Path) -> Iterator[Callable[..., Result]]:
    """`outreach …` as an operator runs it: settings from the environment, its own runtime
    (closed afterwards); the test's runtime is installed again for the API server."""
    for name, value in (("DATABASE_URL", rt.settings.database_url),
                        ("FHIR_BASE_URL", fhir.base_url), ("WEBHOOK_SECRET", WEBHOOK_SECRET),
                        ("RULES_DIR", str(rules_dir)), ("TIMEZONE", ZONE)):
        monkeypatch.setenv(f"OUTREACH_{name}", value)
    built: list[Runtime] = []
    real_build = runtime_module.build_runtime

    def build(*args: Any, **kwargs: Any) -> Runtime:
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(runtime_module, "build_runtime", build)

    def invoke(*args: str) -> Result:
        get_settings.cache_clear()
        runtime_module.install(None)
        try:
            return runner.invoke(app, ["report", *args])
        finally:
            runtime_module.install(rt)
            while built:
                runtime_module.close(built.pop())

    yield invoke
    get_settings.cache_clear()


def _api(api: ApiServer, query: dict[str, str], headers: dict[str, str] | None = None,
         ) -> httpx.Response:
    return httpx.get(f"{api.url}/admin/reports/outcomes", params=query,
                     headers=AUTH if headers is None else headers, timeout=30)


def test_cli_json_and_the_api_give_the_same_report(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, clock: SimulatedClock,
    cli: Callable[..., Result]
) -> None:
    _week(rt, api_server, twilio, clock)
    days = ["--from", FIRST.isoformat(), "--to", LAST.isoformat()]
    result = cli(*days, "--format", "json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(HEADLINE_KEYS) <= set(printed)
    assert {key: printed[key] for key in ALL} == ALL
    assert printed["by_journey"] == BY_JOURNEY

    response = _api(api_server, {"from": FIRST.isoformat(), "to": LAST.isoformat()})
    assert response.status_code == 200, response.text
    assert response.json() == printed

    filtered = cli(*days, "--format", "json", "--filter", f"journey={DENTAL}")
    assert filtered.exit_code == 0, filtered.output
    by_api = _api(api_server, {"from": FIRST.isoformat(), "to": LAST.isoformat(),
                               "journey": DENTAL}).json()
    assert json.loads(filtered.stdout) == by_api
    assert by_api["filters"] == {"journey": DENTAL} and by_api["appointments"] == 3

    table = cli(*days)
    assert table.exit_code == 0, table.output
    assert f"Outcomes for appointments from {FIRST} to {LAST} ({ZONE})" in table.stdout
    assert "no-show rate" in table.stdout and "40.0%" in table.stdout
    csv_rows = cli(*days, "--format", "csv").stdout.splitlines()
    assert csv_rows[1] == "all,all,7,6,2,1,3,2,0.4,0.3333"
    assert f"journey,{DENTAL},3,3,1,1,1,0,0.0,0.3333" in csv_rows


def test_cli_refuses_bad_periods_dates_and_filters(
    rt: Runtime, cli: Callable[..., Result]
) -> None:
    ana = Person("ana", CHECKUP, mobile="+15555550201")
    _book(rt, ana)
    drain(rt)
    days = ["--from", FIRST.isoformat(), "--to", LAST.isoformat()]
    backwards = cli("--from", LAST.isoformat(), "--to", FIRST.isoformat())
    assert backwards.exit_code == 2
    assert f"--to {FIRST} is before --from {LAST}" in backwards.stderr
    too_long = cli("--from", "2025-01-01", "--to", "2026-01-02")
    assert too_long.exit_code == 2 and "at most 366 days" in too_long.stderr
    for bad in ("2026-02-30", "next week", "03/09/2026"):
        result = cli("--from", bad, "--to", LAST.isoformat())
        assert result.exit_code == 2, (bad, result.output)
        assert f"--from: not a date (YYYY-MM-DD): {bad!r}" in result.stderr
    unknown = cli(*days, "--filter", "journey=nope")
    assert unknown.exit_code == 2
    assert f"unknown journey 'nope'; in this period: {CHECKUP}" in unknown.stderr
    assert unknown.stdout == ""
    no_such = cli(*days, "--filter", "colour=red")
    assert no_such.exit_code == 2 and "journey, step, channel, language" in no_such.stderr
    assert cli(*days, "--filter", "journey").exit_code == 2
    # The MeasureReport is the period's: a filtered one would replace it.
    filtered = cli(*days, "--filter", f"journey={CHECKUP}", "--publish")
    assert filtered.exit_code == 2 and "without --filter" in filtered.stderr
    assert cli(*days, "--format", "xml").exit_code == 2


def test_api_needs_a_token_and_refuses_bad_periods_and_filters(
    rt: Runtime, api_server: ApiServer
) -> None:
    _book(rt, Person("ana", CHECKUP, mobile="+15555550201"))
    drain(rt)
    days = {"from": FIRST.isoformat(), "to": LAST.isoformat()}
    assert _api(api_server, days, headers={}).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-0123456789"}
    assert _api(api_server, days, headers=wrong).status_code == 401
    assert _api(api_server, days).status_code == 200
    backwards = _api(api_server, {"from": LAST.isoformat(), "to": FIRST.isoformat()})
    assert backwards.status_code == 400 and "before" in backwards.json()["detail"]
    unknown = _api(api_server, {**days, "journey": "nope"})
    assert unknown.status_code == 400
    assert unknown.json()["detail"] == f"unknown journey 'nope'; in this period: {CHECKUP}"
    channel = _api(api_server, {**days, "channel": "fax"})
    assert channel.status_code == 400 and "in this period: sms" in channel.json()["detail"]
    typo = _api(api_server, {**days, "journy": CHECKUP})  # not an unfiltered answer
    assert typo.status_code == 400
    assert typo.json()["detail"].startswith("unknown query parameter 'journy'; use from, to, "
                                            "journey, step, channel")
    year = {"from": "2025-01-01", "to": "2026-01-01"}  # 366 days, both ends included
    assert _api(api_server, year).status_code == 200
    too_long = _api(api_server, {**year, "to": "2026-01-02"})
    assert too_long.status_code == 400 and "at most 366 days" in too_long.json()["detail"]
    for bad in ("next-week", "2026-02-30", ""):
        assert _api(api_server, {**days, "from": bad}).status_code == 422, bad
    assert _api(api_server, {"from": FIRST.isoformat()}).status_code == 422


def _groups(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for group in report["group"]:
        code = next(c["code"] for c in group["code"]["coding"] if c["system"] == GROUP_SYSTEM)
        populations = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
        found[code] = {**populations, **({"score": group["measureScore"]["value"]}
                                         if "measureScore" in group else {})}
    return found


def test_publish_writes_a_measure_and_one_measure_report_per_period(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, clock: SimulatedClock,
    fhir: FhirTestServer, cli: Callable[..., Result]
) -> None:
    _week(rt, api_server, twilio, clock)
    days = ["--from", FIRST.isoformat(), "--to", LAST.isoformat(), "--format", "json"]
    first = cli(*days, "--publish")
    assert first.exit_code == 0, first.output
    assert "published Measure/" in first.stderr and "published MeasureReport/" in first.stderr
    again = cli(*days, "--publish")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(first.stdout)

    with FhirClient(fhir.base_url) as client:
        (measure,) = client.search("Measure", {"url": MEASURE_URL})
        reports = list(client.search("MeasureReport", {"_count": 10}))
    assert (measure["status"], measure["version"]) == ("active", "1")
    assert len(measure["group"]) == 8
    (report,) = reports  # the second publication replaced the first
    assert (report["status"], report["type"]) == ("complete", "summary")
    assert report["measure"] == f"{MEASURE_URL}|1"
    assert report["period"] == {"start": FIRST.isoformat(), "end": LAST.isoformat()}
    assert _groups(report) == {
        "appointments": {"initial-population": 7},
        "reached": {"initial-population": 6},
        "fulfilled": {"initial-population": 3},
        "no-show": {"initial-population": 2},
        "cancelled-by-patient": {"initial-population": 1},
        "no-show-rate": {"numerator": 2, "denominator": 5, "score": 0.4},
        "confirmation-rate": {"numerator": 2, "denominator": 6, "score": 0.3333},
        "opt-out-rate": {"numerator": 1, "denominator": 6, "score": 0.1667},
    }

    other = cli("--from", (FIRST - timedelta(days=7)).isoformat(), "--to",
                (FIRST - timedelta(days=1)).isoformat(), "--format", "json", "--publish")
    assert other.exit_code == 0, other.output
    with FhirClient(fhir.base_url) as client:
        periods = sorted(r["period"]["start"] for r in client.search("MeasureReport"))
        empty = next(r for r in client.search("MeasureReport")
                     if r["period"]["start"] != FIRST.isoformat())
    assert periods == sorted([FIRST.isoformat(), (FIRST - timedelta(days=7)).isoformat()])
    assert "measureScore" not in _groups_raw(empty, "no-show-rate")  # 0 / 0: no score
    assert date.fromisoformat(empty["period"]["end"]) == FIRST - timedelta(days=1)


def _groups_raw(report: dict[str, Any], code: str) -> dict[str, Any]:
    return next(g for g in report["group"]
                if g["code"]["coding"][0]["code"] == code)
