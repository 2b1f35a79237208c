"""The admin API: authentication, a patient's outreach, step actions, consent, pause, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from outreach.api.app import create_app
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep, StepState
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer

TOKEN = "alice-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer) -> Runtime:
    return make_runtime(clock=SimulatedClock(NOW), admin_tokens=f"alice={TOKEN}",
                        fhir_base_url=fhir.base_url, smtp_host="127.0.0.1", smtp_port=smtp.port,
                        smtp_from="reminders@hospital.example")


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app())


def _book(rt: Runtime) -> str:
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(email="pat@example.org"))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
    ingest(rt, appt, source="test")
    return str(pat["id"])


def _drain(rt: Runtime) -> list[jobs.SendOutcome]:
    queue = rt.enqueue
    assert isinstance(queue, CollectingEnqueuer)
    outcomes = []
    while queue.steps:
        outcomes.append(jobs.send_step(rt, queue.steps.pop(0)))
    queue.writebacks.clear()
    return outcomes


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/admin/journeys"), ("get", "/admin/patients/p1/enrollments"),
    ("post", "/admin/steps/1/cancel"), ("post", "/admin/steps/1/resend"),
    ("get", "/admin/tasks"), ("get", "/admin/audit"), ("get", "/admin/writebacks"),
    ("post", "/admin/journeys/appointment-reminders/pause"),
])
def test_every_route_needs_a_valid_token(client: TestClient, method: str, path: str) -> None:
    assert getattr(client, method)(path).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token-0123456789"}
    assert getattr(client, method)(path, headers=wrong).status_code == 401


def test_a_patients_outreach_and_unknown_ids(client: TestClient, rt: Runtime) -> None:
    patient_id = _book(rt)
    response = client.get(f"/admin/patients/{patient_id}/enrollments", headers=AUTH)
    assert response.status_code == 200
    (enrollment,) = response.json()
    assert enrollment["journey"] == "appointment-reminders"
    assert enrollment["steps"][0]["step"] == "booked"
    missing = client.get("/admin/patients/nobody/enrollments", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no outreach for Patient/nobody"}
    assert client.post("/admin/steps/999999/cancel", headers=AUTH).status_code == 404


def test_cancel_and_resend_follow_the_step_state(client: TestClient, rt: Runtime) -> None:
    patient_id = _book(rt)
    steps = client.get(f"/admin/patients/{patient_id}/enrollments", headers=AUTH).json()[0]
    reminder = next(s for s in steps["steps"] if s["step"] == "reminder-24h")
    response = client.post(f"/admin/steps/{reminder['id']}/cancel", headers=AUTH)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    again = client.post(f"/admin/steps/{reminder['id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    assert client.post(f"/admin/steps/{reminder['id']}/resend", headers=AUTH).status_code == 409
    with rt.sessions.begin() as session:  # a step that failed can be sent again
        session.get_one(ScheduledStep, reminder["id"]).state = StepState.FAILED
    resent = client.post(f"/admin/steps/{reminder['id']}/resend", headers=AUTH)
    assert resent.status_code == 200 and resent.json()["state"] == "queued"
    assert reminder["id"] in rt.enqueue.steps  # type: ignore[attr-defined]
    audit = client.get("/admin/audit", headers=AUTH).json()
    assert [(a["actor"], a["action"]) for a in audit] == [
        ("alice", "resend-step"), ("alice", "cancel-step")]


def test_a_paused_journey_sends_nothing_until_resumed(
    client: TestClient, rt: Runtime, smtp: SmtpServer
) -> None:
    assert client.post("/admin/journeys/appointment-reminders/pause",
                       headers=AUTH).status_code == 204
    assert client.get("/admin/journeys", headers=AUTH).json()[0]["paused"] is True
    _book(rt)
    (outcome,) = _drain(rt)
    assert (outcome.state, outcome.reason) == (StepState.SCHEDULED, "journey paused")
    assert smtp.messages == []
    assert client.post("/admin/journeys/appointment-reminders/resume",
                       headers=AUTH).status_code == 204
    with rt.sessions() as session:
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "booked")).one()
    rt.clock.set(due)  # type: ignore[attr-defined]
    jobs.sweep(rt)
    assert [o.state for o in _drain(rt)] == [StepState.SENT]
    assert client.post("/admin/journeys/nope/pause", headers=AUTH).status_code == 404


def test_staff_opt_out_stops_messages_and_is_audited(
    client: TestClient, rt: Runtime, smtp: SmtpServer
) -> None:
    body = {"channel": "email", "address": "PAT@example.org", "opted_out": True}
    response = client.put("/admin/patients/p1/consent", json=body, headers=AUTH)
    assert response.json() == {"changed": True}
    assert client.put("/admin/patients/p1/consent", json=body,
                      headers=AUTH).json() == {"changed": False}
    _book(rt)
    (outcome,) = _drain(rt)
    assert outcome.state == StepState.SKIPPED and "opted out of email" in (outcome.reason or "")
    assert smtp.messages == []
    (entry, _) = client.get("/admin/audit", headers=AUTH).json()
    assert entry["action"] == "opt-out" and entry["target"] == "Patient/p1"
    assert "PAT@example.org" not in str(entry)  # no contact details in the audit trail
    bad = client.put("/admin/patients/p1/consent", json={**body, "channel": "fax"}, headers=AUTH)
    assert bad.status_code == 422


def test_writebacks_show_what_is_not_yet_in_the_ehr_without_its_content(
        client: TestClient, rt: Runtime) -> None:
    _book(rt)
    _drain(rt)  # sent; its write-backs queued and not yet written
    pending = client.get("/admin/writebacks?state=pending", headers=AUTH)
    assert pending.status_code == 200
    rows = pending.json()
    assert {r["resource_type"] for r in rows} >= {"Communication"}
    assert all(r["state"] == "pending" and "resource" not in r for r in rows)
    assert "pat@example.org" not in pending.text
    assert client.get("/admin/writebacks?state=done", headers=AUTH).json() == []
    assert client.get("/admin/writebacks?state=lost", headers=AUTH).status_code == 422
