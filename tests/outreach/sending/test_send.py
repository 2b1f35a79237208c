"""Sending on real Postgres, SMTP and FHIR server, driven by a simulated clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connector.client import FhirClient
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import DeliveryAttempt, ScheduledStep, StepState, Writeback
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
       clock: SimulatedClock) -> Runtime:
    return make_runtime(clock=clock, fhir_base_url=fhir.base_url, smtp_host="127.0.0.1",
                        smtp_port=smtp.port, smtp_from="reminders@hospital.example")


def _book(rt: Runtime, start: datetime, **patient_fields: object) -> dict[str, object]:
    """Create the Patient and Appointment in the EHR and ingest the appointment."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(**patient_fields))  # type: ignore[arg-type]
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
    ingest(rt, appt, source="test")
    return appt


def _steps(rt: Runtime) -> dict[str, ScheduledStep]:
    with rt.sessions() as session:
        return {s.step_id: s for s in session.scalars(select(ScheduledStep))}


def _queue(rt: Runtime) -> CollectingEnqueuer:
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    return rt.enqueue


def _communications(fhir: FhirClient, appt_id: object) -> list[dict[str, object]]:
    found = fhir.search("Communication", {"_count": 100})
    return [c for c in found if {"reference": f"Appointment/{appt_id}"} in c["about"]]


def test_confirmation_now_and_reminders_when_due(rt: Runtime, smtp: SmtpServer,
                                                 clock: SimulatedClock) -> None:
    _book(rt, NOW + timedelta(days=5))
    assert [o.state for o in drain(rt)] == [StepState.SENT]
    assert len(smtp.messages) == 1

    clock.advance(timedelta(days=1, hours=23))  # 3 days + 1 h before the visit
    assert jobs.sweep(rt).step_ids == []    # the 72 h reminder is not due yet
    clock.advance(timedelta(hours=1))
    claimed = jobs.sweep(rt).step_ids
    assert len(claimed) == 1
    assert drain(rt)[0].state == StepState.SENT
    assert len(smtp.messages) == 2
    assert "Reminder" in smtp.messages[1]["Subject"]


def test_a_step_is_sent_once_however_often_its_task_runs(rt: Runtime, smtp: SmtpServer) -> None:
    _book(rt, NOW + timedelta(days=5))
    (step_id,) = _queue(rt).steps
    outcomes = [jobs.send_step(rt, step_id) for _ in range(3)]
    assert [o.state for o in outcomes] == [StepState.SENT, "not-queued", "not-queued"]
    assert len(smtp.messages) == 1


def test_smtp_down_then_back_sends_after_backoff(rt: Runtime, smtp: SmtpServer,
                                                 clock: SimulatedClock) -> None:
    smtp.stop()
    _book(rt, NOW + timedelta(days=5))
    (outcome,) = drain(rt)
    assert outcome.state == StepState.SCHEDULED
    booked = _steps(rt)["booked"]
    assert booked.attempts == 1 and booked.due_at > NOW
    assert "retrying" in (booked.reason or "")

    smtp.start()
    assert jobs.sweep(rt).step_ids == []  # not before its backoff
    clock.set(booked.due_at)
    jobs.sweep(rt)
    assert [o.state for o in drain(rt)] == [StepState.SENT]
    assert len(smtp.messages) == 1
    with rt.sessions() as session:
        attempts = [a.state for a in session.scalars(
            select(DeliveryAttempt).order_by(DeliveryAttempt.id))]
    assert attempts == ["failed", "sent"]


def test_refused_address_is_not_retried_and_falls_back(rt: Runtime, smtp: SmtpServer) -> None:
    smtp.refuse("550 5.1.1 mailbox unavailable")
    _book(rt, NOW + timedelta(days=5))  # email only: no SMS to fall back to
    assert [o.state for o in drain(rt)] == [StepState.QUEUED, StepState.SKIPPED]
    booked = _steps(rt)["booked"]
    assert booked.excluded_channels == "email"
    assert "failed before: email" in (booked.reason or "")
    with rt.sessions() as session:
        (attempt,) = session.scalars(select(DeliveryAttempt))
    assert (attempt.state, attempt.error_code) == ("failed", "550")


def test_cancelled_in_the_ehr_without_a_notification_is_not_sent(
    rt: Runtime, smtp: SmtpServer, clock: SimulatedClock
) -> None:
    assert rt.ehr is not None
    appt = _book(rt, NOW + timedelta(days=5))
    drain(rt)
    rt.ehr.update({**appt, "status": "cancelled"})  # the notification never reaches us
    clock.advance(timedelta(days=2))
    jobs.sweep(rt)
    outcomes = drain(rt)
    assert outcomes[0].state == StepState.CANCELLED
    assert len(smtp.messages) == 1  # only the confirmation sent before the cancellation
    pending = [s for s in _steps(rt).values() if s.state in ("scheduled", "queued")]
    assert pending == []  # the fresh version was ingested and cancelled the rest


def test_ehr_down_delays_the_write_back_and_never_loses_it(
    rt: Runtime, fhir: FhirTestServer, smtp: SmtpServer, clock: SimulatedClock
) -> None:
    assert rt.ehr is not None
    appt = _book(rt, NOW + timedelta(days=5))
    queue = _queue(rt)
    assert jobs.send_step(rt, queue.steps.pop()).state == StepState.SENT
    fhir.outage(503)  # down between the send and its write-back
    drain(rt)
    assert len(smtp.messages) == 1
    communication_row = select(Writeback).where(Writeback.resource_type == "Communication")
    with rt.sessions() as session:
        (row,) = session.scalars(communication_row)
    assert row.state == "pending" and row.attempts == 1 and "503" in (row.last_error or "")

    clock.set(row.next_attempt_at)
    jobs.sweep(rt)
    drain(rt)  # still down: stays pending, tried again later
    fhir.outage(None)
    with rt.sessions() as session:
        row = session.scalars(communication_row).one()
    assert row.state == "pending" and row.attempts == 2
    clock.set(row.next_attempt_at)
    assert row.id in jobs.sweep(rt).writeback_ids
    drain(rt)
    (communication,) = _communications(rt.ehr, appt["id"])
    assert communication["status"] == "completed"

    # A retry after success (e.g. the worker died before recording it) creates no duplicate.
    with rt.sessions.begin() as session:
        session.get_one(Writeback, row.id).state = "pending"
    jobs.write_back(rt, row.id)
    assert len(_communications(rt.ehr, appt["id"])) == 1


def test_ehr_down_at_send_time_postpones_the_step(
    rt: Runtime, fhir: FhirTestServer, smtp: SmtpServer, clock: SimulatedClock
) -> None:
    _book(rt, NOW + timedelta(days=5))
    fhir.outage(503)  # preconditions cannot be re-checked: do not send blind
    (outcome,) = drain(rt)
    assert outcome.state == StepState.SCHEDULED and smtp.messages == []
    fhir.outage(None)
    clock.set(_steps(rt)["booked"].due_at)
    jobs.sweep(rt)
    assert [o.state for o in drain(rt)] == [StepState.SENT]
    assert len(smtp.messages) == 1


def test_write_back_the_ehr_cannot_take_is_kept_locally(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.capabilities import parse_capabilities
    from outreach.writeback import outbox

    statement = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                 "fhirVersion": "4.0.1", "format": ["json"], "date": "2026-01-01",
                 "rest": [{"mode": "server", "resource": [
                     {"type": "Communication", "interaction": [
                         {"code": c} for c in ("create", "update", "search-type", "read")]}]}]}
    monkeypatch.setattr(outbox, "capabilities", lambda _client: parse_capabilities(statement))
    assert outbox.support_report(rt) == [
        "the EHR does not support CommunicationRequest create, update, search-type",
        "the EHR does not support Task create, update, search-type",
        "the EHR does not support QuestionnaireResponse create, update, search-type",
        "the EHR does not support Consent create",
    ]
    _book(rt, NOW + timedelta(days=5))
    drain(rt)
    with rt.sessions() as session:
        states = dict(session.execute(select(Writeback.resource_type, Writeback.state)).all())
    assert states == {"Communication": "done", "CommunicationRequest": "local"}


def test_each_planned_step_is_a_communication_request_in_the_ehr(
    rt: Runtime, clock: SimulatedClock
) -> None:
    assert rt.ehr is not None
    appt = _book(rt, NOW + timedelta(days=5))
    drain(rt)
    requests = {r["identifier"][0]["value"]: r
                for r in rt.ehr.search("CommunicationRequest", {"_count": 50})}
    steps = _steps(rt)
    assert set(requests) == {f"request-{s.uid}" for s in steps.values()}  # one per step
    booked = requests[f"request-{steps['booked'].uid}"]
    reminder = requests[f"request-{steps['reminder-24h'].uid}"]
    assert booked["status"] == "completed" and reminder["status"] == "active"
    assert reminder["occurrenceDateTime"].startswith(
        (NOW + timedelta(days=4)).strftime("%Y-%m-%dT%H:%M"))
    assert reminder["about"] == [{"reference": f"Appointment/{appt['id']}"}]
    (communication,) = _communications(rt.ehr, appt["id"])
    assert communication["basedOn"][0]["identifier"]["value"] == booked["identifier"][0]["value"]

    rt.ehr.update({**appt, "status": "cancelled"})
    ingest(rt, rt.ehr.read("Appointment", str(appt["id"])), source="test")
    drain(rt)
    statuses = {r["identifier"][0]["value"]: r["status"]
                for r in rt.ehr.search("CommunicationRequest", {"_count": 50})}
    assert statuses[f"request-{steps['reminder-24h'].uid}"] == "revoked"
    assert len(statuses) == 4  # updated in place, never duplicated
