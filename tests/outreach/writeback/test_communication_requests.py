"""Each planned step as a CommunicationRequest in the outbox, following the step's state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from connector.polling import fhir_instant
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.db import transaction
from outreach.store.models import Enrollment, ScheduledStep, StepState, Writeback
from outreach.writeback.communication_requests import new_request_rows, queue_requests
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
SYSTEM = "urn:fhir-outreach:step"
START = NOW + timedelta(days=5)


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    """The shipped appointment-reminders journey, one booked appointment enrolled in it (four
    steps); the requests ingest queued are removed so that each test queues its own."""
    rt = make_runtime(clock=SimulatedClock(NOW))
    result = ingest(rt, appointment("Patient/p1", START, aid="a1", version="1", updated=NOW),
                    source="test")
    assert [o.action for o in result.journeys] == ["enroll"]
    with transaction(rt.sessions) as session:
        session.execute(delete(Writeback))
    return rt


def _queue(rt: Runtime, *, first: bool = False,
           states: dict[str, tuple[str, str | None]] | None = None) -> list[int]:
    """Set the named steps' (state, reason), then queue the requests of every step."""
    with transaction(rt.sessions) as session:
        enrollment = session.scalars(select(Enrollment)).one()
        steps = sorted(enrollment.steps, key=lambda s: s.due_at)
        for step in steps:
            if states and step.step_id in states:
                step.state, step.reason = states[step.step_id]
        session.flush()
        return queue_requests(session, SYSTEM, rt.journeys, enrollment, steps, NOW, first=first)


def _rows(rt: Runtime) -> dict[str, Writeback]:
    """The outbox rows by step id (booked, reminder-72h, ...)."""
    with rt.sessions() as session:
        uids = dict(session.execute(select(ScheduledStep.uid, ScheduledStep.step_id)).all())
        rows = session.scalars(select(Writeback)).all()
    return {uids[row.identifier.removeprefix(f"{SYSTEM}|request-")]: row for row in rows}


def test_a_new_enrollment_creates_one_request_per_step(rt: Runtime) -> None:
    ids = _queue(rt, first=True)
    rows = _rows(rt)
    assert set(rows) == {"booked", "reminder-72h", "reminder-24h", "reminder-2h"}
    assert sorted(ids) == sorted(r.id for r in rows.values())
    assert {(r.resource_type, r.operation, r.state) for r in rows.values()} == {
        ("CommunicationRequest", "create", "pending")}
    # booked is queued for sending at once, the reminders are scheduled: all still to come
    assert {r.resource["status"] for r in rows.values()} == {"active"}


def test_each_request_says_when_how_and_about_what(rt: Runtime) -> None:
    _queue(rt, first=True)
    with rt.sessions() as session:
        due = dict(session.execute(select(ScheduledStep.step_id, ScheduledStep.due_at)).all())
    reminder = _rows(rt)["reminder-24h"].resource
    assert reminder["occurrenceDateTime"] == fhir_instant(due["reminder-24h"])
    assert due["reminder-24h"] == START - timedelta(hours=24)
    assert reminder["subject"] == {"reference": "Patient/p1"}
    assert reminder["about"] == [{"reference": "Appointment/a1"}]
    assert [m["text"] for m in reminder["medium"]] == ["SMS", "Email"]
    assert reminder["category"][0]["coding"][0]["code"] == "reminder"
    assert reminder["payload"] == [{"contentString": "appointment-reminders: reminder-24h"}]
    assert _rows(rt)["booked"].resource["category"][0]["coding"][0]["code"] == "notification"


@pytest.mark.parametrize(("state", "reason", "status", "status_reason"), [
    (StepState.SCHEDULED, None, "active", None),
    (StepState.QUEUED, None, "active", None),
    (StepState.SENDING, None, "active", None),
    (StepState.SENT, "re-sent by alice", "completed", None),
    (StepState.SKIPPED, "opted out of sms", "revoked", "opted out of sms"),
    (StepState.CANCELLED, "cancel_when matched", "revoked", "cancel_when matched"),
    (StepState.FAILED, "gave up after 5 attempts", "revoked", "gave up after 5 attempts"),
])
def test_the_request_status_follows_the_step(
    rt: Runtime, state: StepState, reason: str | None, status: str, status_reason: str | None
) -> None:
    _queue(rt, states={"reminder-72h": (state, reason)})
    resource: dict[str, Any] = _rows(rt)["reminder-72h"].resource
    assert resource["status"] == status
    assert resource.get("statusReason") == (
        {"text": status_reason} if status_reason else None)


def test_later_changes_refresh_the_same_rows_as_upserts(rt: Runtime) -> None:
    created = _queue(rt, first=True)
    with transaction(rt.sessions) as session:  # written to the EHR meanwhile
        for row in session.scalars(select(Writeback)):
            row.state = "done"
    refreshed = _queue(rt, states={"booked": (StepState.SENT, None),
                                   "reminder-2h": (StepState.CANCELLED, "appointment moved")})
    assert refreshed == created  # one row per step, never a second
    rows = _rows(rt)
    assert len(rows) == 4
    assert {(r.operation, r.state) for r in rows.values()} == {("upsert", "pending")}
    assert rows["booked"].resource["status"] == "completed"
    assert rows["reminder-2h"].resource["status"] == "revoked"
    assert rows["reminder-72h"].resource["status"] == "active"


def test_a_batchs_rows_are_the_requests_queue_requests_would_write(rt: Runtime) -> None:
    """Batch ingest writes the outbox rows from JSON it fills in itself: the same documents,
    whatever the step's state and however odd the references' text."""
    with transaction(rt.sessions) as session:
        enrollment = session.scalars(select(Enrollment)).one()
        enrollment.patient = 'Patient/q"\\\u00e9\u2028'  # quotes, backslashes, non-ASCII
        steps = sorted(enrollment.steps, key=lambda s: s.due_at)
        steps[1].state, steps[1].reason = StepState.SKIPPED, 'opted out of "sms"'
        steps[2].state = StepState.QUEUED
        session.flush()
        batch = json.loads(new_request_rows(SYSTEM, rt.journeys, [(enrollment, steps)], NOW))
        queue_requests(session, SYSTEM, rt.journeys, enrollment, steps, NOW, first=True)
    with rt.sessions() as session:
        rows = session.scalars(select(Writeback).order_by(Writeback.id)).all()
        one_at_a_time = [{"resource_type": r.resource_type, "identifier": r.identifier,
                          "resource": r.resource} for r in rows]
    assert batch == one_at_a_time
    assert [r["resource"]["status"] for r in batch] == ["active", "revoked", "active", "active"]
