"""Service-recovery Tasks and how long they stayed open, on the real parts: low survey scores
answered through signed Twilio webhooks open Tasks we write to the FHIR server; staff complete
or cancel them there; the poller follows our Tasks (and only ours) by our identifier system;
the report, its table and CSV, the admin API and the dashboard show the counts and durations."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connector.client import FhirClient
from outreach.api.app import create_app
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake import polling
from outreach.intake.ingest import ingest
from outreach.reports.recovery import percentile
from outreach.reports.render import as_csv, as_table
from outreach.reports.service import outcome_report, period
from outreach.store.models import ResourceVersion
from rules.changes import parse_instant
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

# Two days ago: the EHR stamps versions with its own (wall) clock, after our simulated one.
NOW = (datetime.now(UTC) - timedelta(days=2)).replace(hour=12, minute=0, second=0, microsecond=0)
DAY = NOW.date()
CLINIC = "+15555550100"
TOKEN = "report-reader-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MOBILES = {"ana": "+15555550301", "ben": "+15555550302", "cy": "+15555550303",
           "dee": "+15555550304"}
SURVEY = """
journey: sms-survey
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: trigger
steps:
  - id: survey
    at: immediately
    channel: [sms]
    template: satisfaction-survey
    survey: {min: 1, max: 5, low_at_most: 2, recovery_template: service-recovery,
             recovery_task: "Call the patient back within one business day."}
"""


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       api_server: ApiServer, tmp_path: Path) -> Runtime:
    (tmp_path / "sms-survey.yaml").write_text(SURVEY)
    return make_runtime(
        rules_dir=tmp_path, clock=SimulatedClock(NOW), fhir_base_url=fhir.base_url,
        public_url=api_server.url, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
        twilio_from=CLINIC, twilio_base_url=twilio.base_url, sms_rate_per_second=100,
        admin_tokens=f"reports={TOKEN}")


def _fhir(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _set_clock(rt: Runtime, moment: datetime) -> None:
    rt.clock.set(moment)  # type: ignore[attr-defined]


def _book(rt: Runtime, mobile: str) -> str:
    pat, _ = _fhir(rt).create(patient(email=None, mobile=mobile))
    appt, _ = _fhir(rt).create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=1)))
    ingest(rt, appt, source="test")
    return f"Patient/{pat['id']}"


def _reply(rt: Runtime, api: ApiServer, mobile: str, body: str, at: datetime) -> None:
    _set_clock(rt, at)
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(mobile, CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)


def _staff(rt: Runtime, task: dict[str, Any], status: str, ended: datetime | None = None
           ) -> dict[str, Any]:
    """A member of staff closes the Task in the EHR (with its end of execution, or not)."""
    current = _fhir(rt).read("Task", task["id"])
    changed = {**current, "status": status}
    if ended is not None:
        changed["executionPeriod"] = {"start": current["authoredOn"],
                                      "end": ended.isoformat().replace("+00:00", "Z")}
    return _fhir(rt).update(changed)


def _hours(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 3600


def _spread(values: list[float]) -> dict[str, float]:
    """Median and 90th percentile by hand: interpolated between the nearest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * 0.9
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"median": round(median, 1),
            "p90": round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 1)}


def _week(rt: Runtime, api: ApiServer) -> dict[str, dict[str, Any]]:
    """Four surveys answered: three low scores (service recovery) and a free-text reply (a
    routine Task); the Tasks as written to the EHR, by patient name."""
    patients = {name: _book(rt, mobile) for name, mobile in MOBILES.items()}
    drain(rt)
    for hour, (name, body) in enumerate((("ana", "1"), ("ben", "2"), ("cy", "1"),
                                         ("dee", "Can someone call me about parking?")), 1):
        _reply(rt, api, MOBILES[name], body, NOW + timedelta(hours=hour))
    tasks = {t["for"]["reference"]: t for t in _fhir(rt).search("Task", {"_count": 100})}
    return {name: tasks[reference] for name, reference in patients.items()}


def test_tasks_closed_in_the_ehr_are_followed_and_their_time_open_reported(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    tasks = _week(rt, api_server)
    assert [tasks[n]["priority"] for n in MOBILES] == ["urgent", "urgent", "urgent", "routine"]
    opened = {name: NOW + timedelta(hours=hour) for hour, name in enumerate(MOBILES, 1)}
    _staff(rt, tasks["ana"], "completed", ended=opened["ana"] + timedelta(hours=5))
    ben = _staff(rt, tasks["ben"], "cancelled")  # no executionPeriod: its lastUpdated counts
    _staff(rt, tasks["dee"], "completed")
    stranger, _ = _fhir(rt).create({"resourceType": "Task", "status": "requested",
                                    "intent": "order", "description": "not ours"})

    _set_clock(rt, NOW + timedelta(hours=10))
    assert polling.poll_once(rt)["Task"] == 4  # our four Tasks' current versions
    with rt.sessions() as session:
        followed = set(session.scalars(select(ResourceVersion.resource_id).where(
            ResourceVersion.resource_type == "Task")))
    assert followed == {t["id"] for t in tasks.values()}  # never the EHR's other Tasks
    assert stranger["id"] not in followed
    assert polling.poll_once(rt)["Task"] == 0  # nothing new: nothing ingested twice

    ben_closed = parse_instant(ben["meta"]["lastUpdated"])
    to_close = [5.0, _hours(ben_closed, opened["ben"])]
    cy_open = _hours(NOW + timedelta(hours=10), opened["cy"])  # 7 h and counting
    report = outcome_report(rt, period(DAY, DAY))
    assert report["service_recovery"] == {
        "created": 3, "open": 1, "closed": 2,
        "by_status": {"cancelled": 1, "completed": 1, "requested": 1},
        "status_from_ehr": 3,
        "hours_open": _spread([*to_close, cy_open]),
        "hours_to_close": _spread(to_close),
    }

    # The same in the table, the CSV and the admin API.
    table = as_table(report)
    assert "service recovery: 3 tasks opened, 1 open now, 2 closed; closed after " \
           f"{_spread(to_close)['median']:g} h median" in table
    rows = as_csv(report).splitlines()
    assert rows[rows.index("service_recovery,value") + 1:][:3] == ["created,3", "open,1",
                                                                   "closed,2"]
    assert f"hours_to_close_p90,{_spread(to_close)['p90']}" in rows
    api = httpx.get(f"{api_server.url}/admin/reports/outcomes", headers=AUTH, timeout=30,
                    params={"from": DAY.isoformat(), "to": DAY.isoformat()})
    assert api.status_code == 200 and api.json()["service_recovery"] == report["service_recovery"]

    # The dashboard lists only the Task still open, with how long it has been.
    page = " ".join(html.unescape(TestClient(create_app()).get(
        f"/dashboard?from={DAY}&to={DAY}", headers=AUTH).text).split())
    assert "Service recovery in this period: 3 opened, 1 open now, 2 closed" in page
    assert '<td>7 h<br><span class="muted">requested</span></td>' in page
    assert page.count("Call the patient back within one business day.") == 1
    assert "(3 of 3 service-recovery Tasks read back" in page

    # Cy's Task is completed in the EHR: the next pass picks it up.
    _staff(rt, tasks["cy"], "completed", ended=opened["cy"] + timedelta(hours=30))
    assert polling.poll_once(rt)["Task"] == 1
    again = outcome_report(rt, period(DAY, DAY))["service_recovery"]
    assert (again["open"], again["closed"]) == (0, 3)
    assert again["hours_to_close"] == _spread([*to_close, 30.0])


def test_a_task_not_yet_in_the_ehr_counts_as_written_and_open(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    _book(rt, MOBILES["ana"])
    drain(rt)
    _set_clock(rt, NOW + timedelta(hours=1))
    response = signed_post(f"{api_server.url}/channels/twilio/inbound",
                           inbound_params(MOBILES["ana"], CLINIC, "2"))
    assert response.status_code == 200
    rt.enqueue.writebacks.clear()  # type: ignore[attr-defined]  # the EHR is unreachable
    _set_clock(rt, NOW + timedelta(hours=4))
    recovery = outcome_report(rt, period(DAY, DAY))["service_recovery"]
    assert recovery["created"] == 1 and recovery["open"] == 1
    assert recovery["status_from_ehr"] == 0 and recovery["by_status"] == {"requested": 1}
    assert recovery["hours_open"] == {"median": 3.0, "p90": 3.0}
    assert recovery["hours_to_close"] == {"median": None, "p90": None}
    # Another day has none: zeros and no durations, not an error.
    quiet = outcome_report(rt, period(DAY + timedelta(days=1), DAY + timedelta(days=1)))
    assert quiet["service_recovery"]["created"] == 0
    assert quiet["service_recovery"]["hours_open"] == {"median": None, "p90": None}


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None), ([4.0], 90, 4.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([1.0, 2.0, 3.0, 4.0], 90, 3.7), ([10.0, 0.0, 5.0], 50, 5.0), ([0.0, 10.0], 90, 9.0),
])
def test_percentiles_interpolate_between_the_nearest_ranks(
    values: list[float], q: float, expected: float | None
) -> None:
    found = percentile(values, q)
    assert (found is None) if expected is None else found == pytest.approx(expected)

