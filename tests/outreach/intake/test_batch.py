"""Batch ingest and group commit on Postgres: the same rows as one at a time, each version once,
a bad version fails alone, and every concurrent caller gets its own answer once stored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake import group_commit
from outreach.intake.batch import ingest_many
from outreach.intake.ingest import IngestResult, ingest
from outreach.intake.notifications import ingest_notified_many
from outreach.store.models import Enrollment, ResourceChangeRecord, ScheduledStep, Writeback
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(clock=SimulatedClock(NOW))


def _booking(aid: str, patient: str, days: float, *, version: int = 1,
             status: str = "booked") -> dict[str, Any]:
    return appointment(patient, NOW + timedelta(days=days), aid=aid, status=status,
                       version=str(version), updated=NOW + timedelta(minutes=version))


def _mixed() -> list[dict[str, Any]]:
    """First sights, a patient with two bookings (caps), a reschedule and a cancellation of a
    booking in the same batch, a redelivery, a proposal (no journey), an older version."""
    return [
        _booking("a1", "Patient/p1", 5),
        _booking("a2", "Patient/p2", 3),
        _booking("a3", "Patient/p1", 5.01),  # same patient: caps see a1's steps
        _booking("a1", "Patient/p1", 6, version=2),  # a1 moved: re-planned
        _booking("a2", "Patient/p2", 3),  # a2 again: a duplicate
        _booking("a4", "Patient/p4", 2, status="proposed"),
        _booking("a2", "Patient/p2", 3, version=3, status="cancelled"),
        _booking("a5", "Patient/p5", 0.05),  # reminders already late: skipped
        _booking("a2", "Patient/p2", 3, version=2),  # older than the cancellation: stale
    ]


def _snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """What a user sees of ingest, without row ids and generated uids."""
    with rt.engine.connect() as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in conn.execute(text(sql)))
        return {
            "changes": rows("SELECT resource_id, version_id, kind, outcome FROM resource_changes"),
            "versions": rows("SELECT resource_id, version_id, deleted, resource::text"
                             " FROM resource_versions"),
            "enrollments": rows("SELECT journey, patient, resource_id, anchor_at, state, reason"
                                " FROM enrollments"),
            "steps": rows("SELECT e.resource_id, s.step_id, s.state, s.due_at, s.reason"
                          " FROM scheduled_steps s JOIN enrollments e ON e.id = s.enrollment_id"),
            # The request's identifier carries the step's uid; everything else must match.
            "outbox": rows("SELECT (resource - 'identifier')::text, operation, state"
                           " FROM writebacks"),
        }


def _outcomes(results: list[IngestResult | Exception]) -> list[str]:
    return [r.outcome if isinstance(r, IngestResult) else type(r).__name__ for r in results]


def _truncate(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE resource_changes, resource_versions, enrollments,"
                          " scheduled_steps, writebacks RESTART IDENTITY CASCADE"))


def test_a_batch_plans_exactly_what_one_at_a_time_plans(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    one_by_one = [ingest(rt, r, "test").outcome for r in _mixed()]
    expected, enqueued = _snapshot(rt), rt.enqueue
    assert isinstance(enqueued, CollectingEnqueuer)
    steps_queued, writebacks_queued = len(enqueued.steps), len(enqueued.writebacks)
    _truncate(rt)
    enqueued.steps.clear()
    enqueued.writebacks.clear()

    batched = ingest_many(rt, [(r, "test") for r in _mixed()])

    assert "one at a time" not in caplog.text  # the batch itself did it, not the fallback
    assert _outcomes(batched) == one_by_one
    assert one_by_one == ["processed", "processed", "processed", "processed", "duplicate",
                          "processed", "processed", "processed", "stale"]
    assert _snapshot(rt) == expected
    assert (len(enqueued.steps), len(enqueued.writebacks)) == (steps_queued,
                                                               writebacks_queued)


def test_redelivery_inside_and_across_batches_is_stored_once(rt: Runtime) -> None:
    bookings = [_booking(f"b{i}", f"Patient/q{i}", 4) for i in range(5)]
    first = ingest_many(rt, [(r, "test") for r in bookings + bookings[:2]])
    again = ingest_many(rt, [(r, "test") for r in bookings])
    assert _outcomes(first) == ["processed"] * 5 + ["duplicate"] * 2
    assert _outcomes(again) == ["duplicate"] * 5
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ResourceChangeRecord)) == 5
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 5
        assert session.scalar(select(func.count()).select_from(ScheduledStep)) == 20
        assert session.scalar(select(func.count()).select_from(Writeback)) == 20


def test_one_bad_version_fails_alone_and_the_others_are_stored(rt: Runtime) -> None:
    good = [_booking(f"c{i}", f"Patient/r{i}", 4) for i in range(3)]
    bad = _booking("c-bad", "Patient/bad", 4)
    bad["comment"] = "\u0000"  # valid JSON that Postgres cannot store as jsonb
    results = ingest_many(rt, [(good[0], "test"), (bad, "test"), (good[1], "test"),
                               (good[2], "test")])
    assert [isinstance(r, IngestResult) and r.outcome == "processed" for r in results] == [
        True, False, True, True]
    assert isinstance(results[1], Exception)
    with rt.sessions() as session:
        stored = set(session.scalars(select(ResourceChangeRecord.resource_id)))
    assert stored == {"c0", "c1", "c2"}


def test_concurrent_callers_each_get_their_own_result_once_committed(rt: Runtime) -> None:
    bookings = [_booking(f"d{i}", f"Patient/s{i}", 4) for i in range(40)]
    # Each caller's version is a first sight, or the redelivery of another caller's.
    work = bookings + bookings[:10]

    def call(resource: dict[str, Any]) -> tuple[str, str]:
        result = group_commit.ingest(rt, resource, "test")
        # Acknowledged means stored: visible to a fresh connection at once.
        with rt.engine.connect() as conn:
            seen = conn.scalar(select(func.count()).select_from(ResourceChangeRecord).where(
                ResourceChangeRecord.resource_id == resource["id"]))
        assert seen == 1
        return result.change.resource_id, result.outcome

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, work))
    assert [rid for rid, _ in answers] == [r["id"] for r in work]
    outcomes = sorted(outcome for _, outcome in answers)
    assert outcomes == ["duplicate"] * 10 + ["processed"] * 40
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 40


def test_group_commit_raises_a_bad_versions_error_to_its_caller_only(rt: Runtime) -> None:
    bad = _booking("e-bad", "Patient/bad", 4)
    bad["comment"] = "\u0000"
    with ThreadPoolExecutor(4) as pool:
        good = pool.submit(group_commit.ingest, rt, _booking("e1", "Patient/t1", 4), "test")
        failing = pool.submit(group_commit.ingest, rt, bad, "test")
        assert good.result().outcome == "processed"
        with pytest.raises(Exception, match=r"(?i)unicode|\\u0000|null"):
            failing.result()


def test_a_bundles_events_are_stored_in_one_transaction_in_order(rt: Runtime) -> None:
    """A topic notification bundle (no EHR here, so payloads are trusted): one commit, each
    event answered as on its own, a repeated event a duplicate."""
    events = [_booking("f1", "Patient/u1", 4), _booking("f2", "Patient/u2", 4),
              _booking("f1", "Patient/u1", 5, version=2), _booking("f2", "Patient/u2", 4)]
    commits: list[int] = []
    event.listen(rt.engine, "commit", lambda _conn: commits.append(1))
    results = ingest_notified_many(
        rt, [("Appointment", str(e["id"]), e) for e in events], "topic")
    assert [r.outcome for r in results] == ["processed", "processed", "processed", "duplicate"]
    assert len(commits) == 1
    with rt.sessions() as session:
        anchors = {e.resource_id: e.anchor_at for e in session.scalars(select(Enrollment))}
    assert anchors["f1"] == NOW + timedelta(days=5)  # the later version won
