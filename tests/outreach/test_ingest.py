"""Ingest on Postgres: each version once, in order; reschedules re-plan, cancellations cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from outreach.clock import SimulatedClock
from outreach.ingest import ingest
from outreach.runtime import Runtime
from outreach.store.models import PENDING_STATES, Enrollment, ScheduledStep, StepState
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(clock=SimulatedClock(NOW))


def _version(v: int, start: datetime, status: str = "booked") -> dict[str, object]:
    return appointment("Patient/p1", start, aid="a1", status=status, version=str(v),
                       updated=NOW + timedelta(minutes=v))


def _steps(rt: Runtime) -> list[ScheduledStep]:
    with rt.sessions() as session:
        return list(session.scalars(select(ScheduledStep).order_by(ScheduledStep.step_id)))


def test_booking_plans_confirmation_now_and_reminders_before_the_start(rt: Runtime) -> None:
    start = NOW + timedelta(days=5)
    result = ingest(rt, _version(1, start), source="test")
    assert result.outcome == "processed"
    due = {s.step_id: (s.state, s.due_at) for s in _steps(rt)}
    assert due["booked"] == (StepState.QUEUED, NOW)
    assert due["reminder-72h"] == (StepState.SCHEDULED, start - timedelta(hours=72))
    assert due["reminder-24h"] == (StepState.SCHEDULED, start - timedelta(hours=24))
    assert due["reminder-2h"] == (StepState.SCHEDULED, start - timedelta(hours=2))


def test_reschedule_leaves_exactly_one_pending_step_per_step_id(rt: Runtime) -> None:
    first, moved = NOW + timedelta(days=5), NOW + timedelta(days=9, hours=3)
    ingest(rt, _version(1, first), source="test")
    ingest(rt, _version(2, moved), source="test")
    steps = _steps(rt)
    assert len(steps) == 4 and len({s.step_id for s in steps}) == 4
    reminders = {s.step_id: s.due_at for s in steps if s.step_id.startswith("reminder")}
    assert reminders == {
        "reminder-72h": moved - timedelta(hours=72),
        "reminder-24h": moved - timedelta(hours=24),
        "reminder-2h": moved - timedelta(hours=2),
    }
    with rt.sessions() as session:
        assert session.scalars(select(Enrollment.anchor_at)).one() == moved


def test_a_later_appointment_revives_reminders_that_had_been_too_late(rt: Runtime) -> None:
    ingest(rt, _version(1, NOW + timedelta(hours=30)), source="test")
    assert {s.step_id: s.state for s in _steps(rt)}["reminder-72h"] == StepState.SKIPPED
    ingest(rt, _version(2, NOW + timedelta(days=6)), source="test")
    assert {s.step_id: s.state for s in _steps(rt)}["reminder-72h"] == StepState.SCHEDULED


def test_cancellation_leaves_no_pending_step(rt: Runtime) -> None:
    start = NOW + timedelta(days=5)
    ingest(rt, _version(1, start), source="test")
    result = ingest(rt, _version(2, start, status="cancelled"), source="test")
    assert [o.action for o in result.journeys] == ["cancel"]
    assert [s for s in _steps(rt) if s.state in PENDING_STATES] == []
    # Re-booking the same appointment does not enroll the patient a second time.
    ingest(rt, _version(3, start), source="test")
    assert len(_steps(rt)) == 4


def test_versions_out_of_order_are_processed_once_in_order(rt: Runtime) -> None:
    start, moved = NOW + timedelta(days=5), NOW + timedelta(days=8)
    v1, v2 = _version(1, start), _version(2, moved)
    assert ingest(rt, v2, source="test").outcome == "processed"
    assert ingest(rt, v1, source="test").outcome == "stale"  # older: recorded, not applied
    assert ingest(rt, v2, source="test").outcome == "duplicate"
    with rt.sessions() as session:
        assert session.scalars(select(Enrollment.anchor_at)).one() == moved


def test_not_booked_or_in_the_past_does_not_enroll(rt: Runtime) -> None:
    ingest(rt, appointment("Patient/p1", NOW + timedelta(days=5), aid="a2", status="proposed",
                           version="1", updated=NOW), source="test")
    ingest(rt, appointment("Patient/p1", NOW - timedelta(days=1), aid="a3", version="1",
                           updated=NOW), source="test")
    assert _steps(rt) == []
