"""Ingest on Postgres: each version once, in order; reschedules re-plan, cancellations cancel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest, ingest_deletion
from outreach.store.db import make_engine
from outreach.store.migrate import upgrade
from outreach.store.models import (
    PENDING_STATES,
    Enrollment,
    ResourceChangeRecord,
    ScheduledStep,
    StepState,
)
from rules import JourneySet
from rules.fhirpath import Condition, FhirPathError
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


# -- what a notification costs, and what the cheaper path must still guarantee -------------------


class _Statements:
    """The SQL statements (and savepoints) an engine runs while counting."""

    def __init__(self, rt: Runtime) -> None:
        self.sql: list[str] = []
        self.savepoints = 0
        event.listen(rt.engine, "before_cursor_execute", self._statement)
        event.listen(rt.engine, "savepoint", self._savepoint)

    def _statement(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.sql.append(" ".join(statement.split()[:3]))

    def _savepoint(self, _conn: object, _name: object) -> None:
        self.savepoints += 1


def test_a_first_sight_no_trigger_wants_costs_two_statements(rt: Runtime) -> None:
    ingest(rt, _version(1, NOW + timedelta(days=5), status="proposed"), source="warm-up")
    counted = _Statements(rt)
    proposed = appointment("Patient/p2", NOW + timedelta(days=5), aid="a2", status="proposed",
                           version="1", updated=NOW)

    assert ingest(rt, proposed, source="test").outcome == "processed"

    # Claim-and-store the version, record it; no enrollment lookup (it was never stored, so no
    # journey can have enrolled it), no savepoint.
    assert [s.split()[2] for s in counted.sql] == ["resource_versions", "resource_changes"]
    assert counted.savepoints == 0


def test_a_redelivery_costs_one_statement_and_writes_nothing(rt: Runtime) -> None:
    v1 = _version(1, NOW + timedelta(days=5))
    ingest(rt, v1, source="test")
    counted = _Statements(rt)

    assert ingest(rt, v1, source="test").outcome == "duplicate"

    assert len(counted.sql) == 1
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ResourceChangeRecord)) == 1


def test_an_update_looks_enrollments_up_once_for_all_journeys(rt: Runtime) -> None:
    start = NOW + timedelta(days=5)
    ingest(rt, _version(1, start), source="test")
    counted = _Statements(rt)

    ingest(rt, _version(2, start + timedelta(days=1)), source="test")

    assert sum(s.startswith("SELECT enrollments") for s in counted.sql) == 1, [
        s[:300] for s in counted.sql if s.startswith("SELECT enrollments")]
    assert counted.savepoints == 0


class _Failing(Condition):
    def __call__(self, *_args: Any, **_kwargs: Any) -> bool:
        raise FhirPathError("FHIRPath failed: on purpose")


def test_a_failing_condition_skips_that_journey_and_the_others_still_apply(rt: Runtime) -> None:
    (reminders,) = rt.journeys.for_resource("Appointment")
    broken = replace(reminders, spec=reminders.spec.model_copy(update={"journey": "broken"}),
                     when=_Failing("true"))
    rt.journeys = JourneySet([broken, reminders])

    result = ingest(rt, _version(1, NOW + timedelta(days=5)), source="test")

    assert [(o.journey, o.action) for o in result.journeys] == [
        ("broken", "error"), ("appointment-reminders", "enroll")]
    with rt.sessions() as session:
        assert list(session.scalars(select(Enrollment.journey))) == ["appointment-reminders"]
    assert len(_steps(rt)) == 4


def test_concurrent_first_sights_of_one_resource_are_processed_once(rt: Runtime) -> None:
    versions = [_version(v, NOW + timedelta(days=4 + v)) for v in (1, 2)]
    deliveries = [v for v in versions for _ in range(6)]

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda v: ingest(rt, v, source="test").outcome, deliveries))

    # Each version at most once; the newest always ends up applied, whichever came first.
    assert outcomes.count("processed") in (1, 2)
    assert set(outcomes) <= {"processed", "duplicate", "stale"}
    with rt.sessions() as session:
        processed = list(session.scalars(select(ResourceChangeRecord.version_id).where(
            ResourceChangeRecord.outcome == "processed").order_by(ResourceChangeRecord.id)))
        (enrollment,) = session.scalars(select(Enrollment))
    assert len(processed) == len(set(processed)) and processed[-1] == "2"
    assert enrollment.anchor_at == NOW + timedelta(days=6)
    assert len({s.step_id for s in _steps(rt)}) == len(_steps(rt)) == 4


def test_the_same_guarantees_hold_on_sqlite(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outreach.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = make_runtime(database_url=url, clock=SimulatedClock(NOW))
    start, moved = NOW + timedelta(days=5), NOW + timedelta(days=8)

    assert ingest(rt, _version(2, moved), source="test").outcome == "processed"
    assert ingest(rt, _version(1, start), source="test").outcome == "stale"
    assert ingest(rt, _version(2, moved), source="test").outcome == "duplicate"
    assert ingest(rt, _version(3, moved, status="cancelled"), source="test").outcome == "processed"
    rt.clock = SimulatedClock(NOW + timedelta(hours=1))  # a deletion is stamped with our clock
    assert ingest_deletion(rt, "Appointment", "a1", source="test").outcome == "processed"
    assert ingest_deletion(rt, "Appointment", "a1", source="test").outcome == "duplicate"
    assert [s for s in _steps(rt) if s.state in PENDING_STATES] == []
    assert len(_steps(rt)) == 4
