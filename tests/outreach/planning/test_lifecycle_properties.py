"""Property tests through the real ingest and enrollment code (SQLite): whatever sequence of
versions an appointment goes through, cancellations leave nothing pending, reschedules leave
exactly one pending step per step id, and nothing is planned in the past or at night."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from outreach import SHIPPED_JOURNEYS
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.intake.ingest import ingest
from outreach.runtime import build_runtime
from outreach.store.db import make_engine, make_session_factory
from outreach.store.models import PENDING_STATES, Base, ScheduledStep
from rules import load_journeys
from tests.support.fhir_data import appointment

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
JOURNEYS = load_journeys(SHIPPED_JOURNEYS)

version = st.tuples(
    st.timedeltas(min_value=timedelta(hours=-2), max_value=timedelta(days=14)),  # start - now
    st.sampled_from(["booked", "booked", "booked", "cancelled", "noshow", "pending"]),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=30)),  # clock advance
)


def _runtime(db: Path) -> Runtime:
    engine = make_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    settings = load_settings(database_url=f"sqlite:///{db}")
    return build_runtime(settings, sessions=make_session_factory(engine),
                         clock=SimulatedClock(NOW), journeys=JOURNEYS, channels={}, ehr=None,
                         enqueue=CollectingEnqueuer())


@settings(max_examples=40, deadline=None, database=None)
@given(versions=st.lists(version, min_size=1, max_size=6))
def test_lifecycle_invariants(versions: list[tuple[timedelta, str, timedelta]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rt = _runtime(Path(tmp) / "p.db")
        clock = rt.clock
        assert isinstance(clock, SimulatedClock)
        try:
            for number, (lead, status, advance) in enumerate(versions, start=1):
                clock.advance(advance)
                now = clock.now()
                resource = appointment("Patient/p1", now + lead, aid="a1", status=status,
                                       version=str(number), updated=now)
                ingest(rt, resource, source="test")
                with rt.sessions() as session:
                    steps = list(session.scalars(select(ScheduledStep)))
                pending = [s for s in steps if s.state in PENDING_STATES]
                if status in ("cancelled", "noshow"):
                    assert pending == []
                ids = [s.step_id for s in pending]
                assert len(ids) == len(set(ids))
                for step in steps:
                    if step.state == "scheduled" and step.updated_at == now:  # planned now
                        assert step.due_at >= now
                        local = step.due_at.astimezone(rt.settings.zone).time()
                        assert time(8) <= local < time(21) or step.step_id == "booked"
        finally:
            rt.engine.dispose()
