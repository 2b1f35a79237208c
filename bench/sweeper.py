"""Due-step sweeping cost with 1,000,000 steps scheduled for later, against the same sweep with
1,000 scheduled (same run, same Postgres): the target is flat, i.e. proportional to the
steps that are due, not to everything scheduled (the partial index on due_at does this)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from sqlalchemy import text

from bench.result import Result
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.runtime import build_runtime
from outreach.worker import jobs
from tests.support.database import temporary_database

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DUE = 200
ROUNDS = 15


def _fill(rt: Runtime, later: int) -> None:
    """One enrollment; `later` steps due in a year, DUE steps due now (set-based inserts)."""
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE scheduled_steps, enrollments RESTART IDENTITY CASCADE"))
        conn.execute(text(
            "INSERT INTO enrollments (journey, journey_version, patient, resource_type, "
            "resource_id, cycle, anchor_at, state, created_at, updated_at) VALUES ('bench', 'v', "
            "'Patient/p', 'Appointment', 'a', '', :now, 'active', :now, :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO scheduled_steps (uid, enrollment_id, step_id, due_at, state, attempts, "
            "excluded_channels, updated_at) SELECT gen_random_uuid()::text, 1, 's' || g, "
            ":later, 'scheduled', 0, '', :now FROM generate_series(1, :n) g"),
            {"later": NOW.replace(year=2027), "now": NOW, "n": later + DUE})
        conn.execute(text("UPDATE scheduled_steps SET due_at = :now WHERE id <= :due"),
                     {"now": NOW, "due": DUE})
        conn.execute(text("ANALYZE scheduled_steps"))


def _sweep_ms(rt: Runtime) -> float:
    samples = []
    for _ in range(ROUNDS):
        with rt.engine.begin() as conn:  # the due steps back to scheduled for the next round
            conn.execute(text("UPDATE scheduled_steps SET state = 'scheduled' WHERE id <= :due"),
                         {"due": DUE})
        began = time.perf_counter()
        claimed = jobs.sweep(rt).step_ids
        samples.append((time.perf_counter() - began) * 1000)
        assert len(claimed) == DUE, len(claimed)
        assert isinstance(rt.enqueue, CollectingEnqueuer)
        rt.enqueue.steps.clear()
    return statistics.median(samples)


def run(later: int = 1_000_000, small: int = 1_000) -> list[Result]:
    with temporary_database() as url:
        rt = build_runtime(load_settings(database_url=url), enqueue=CollectingEnqueuer())
        rt.clock = SimulatedClock(NOW)
        _fill(rt, small)
        baseline = _sweep_ms(rt)
        _fill(rt, later)
        value = _sweep_ms(rt)
        rt.engine.dispose()
    note = f"claim {DUE} due steps among {later:,} scheduled vs {small:,}; median of {ROUNDS}"
    return [Result("sweep_due_steps_ms", value, "ms", baseline, note)]
