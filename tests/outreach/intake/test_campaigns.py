"""Scheduled journeys on Postgres: a tick runs once, a birthday is greeted once a year."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from outreach.core.clock import SimulatedClock
from outreach.intake.campaigns import expand_search, run_due_campaigns
from outreach.store.models import CampaignRun, Enrollment, ScheduledStep
from tests.conftest import RuntimeFactory

BIRTHDAY = Path(__file__).resolve().parents[3] / "rules" / "journeys" / "library" / \
    "birthday-greeting.yaml"


class Source:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources, self.searches = resources, 0

    def search(self, resource_type: str,
               params: Mapping[str, str | int | list[str]] | None = None
               ) -> Iterable[dict[str, Any]]:
        self.searches += 1
        assert (resource_type, dict(params or {})) == ("Patient", {"active": "true"})
        return self.resources


PATIENTS = [
    {"resourceType": "Patient", "id": "born-today", "active": True, "birthDate": "1980-03-02",
     "telecom": [{"system": "phone", "value": "+15555550101", "use": "mobile"}]},
    {"resourceType": "Patient", "id": "born-tomorrow", "active": True,
     "birthDate": "1980-03-03"},
]


def test_a_tick_runs_once_and_a_birthday_is_greeted_once_a_year(
    make_runtime: RuntimeFactory,
) -> None:
    clock = SimulatedClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    rt = make_runtime(clock=clock, rules_dir=BIRTHDAY)
    source = Source(PATIENTS)

    (first,) = run_due_campaigns(rt, source)
    assert (first.ran, first.run_key, first.matched, first.enrolled) == \
        (True, "2026-03-02T09:00+00:00", 1, 1)
    (again,) = run_due_campaigns(rt, source)  # the same tick, a second beat process
    assert again.ran is False and source.searches == 1

    clock.set(datetime(2027, 3, 2, 9, 5, tzinfo=UTC))
    (next_year,) = run_due_campaigns(rt, source)
    assert next_year.enrolled == 1
    with rt.sessions() as session:
        cycles = sorted(session.scalars(select(Enrollment.cycle)))
        assert cycles == ["2026", "2027"]
        assert session.scalar(select(func.count(CampaignRun.id))) == 2
        assert session.scalar(select(func.count(ScheduledStep.id))) == 2


def test_before_the_first_tick_nothing_runs(make_runtime: RuntimeFactory) -> None:
    rt = make_runtime(clock=SimulatedClock(datetime(2026, 3, 2, 8, 59, tzinfo=UTC)),
                      rules_dir=BIRTHDAY)
    (result,) = run_due_campaigns(rt, Source(PATIENTS))
    assert result.run_key == "2026-03-01T09:00+00:00"  # yesterday's tick, still within a day
    assert result.enrolled == 0  # nobody was born on 03-01


def test_search_placeholders_are_dates_relative_to_the_tick() -> None:
    assert expand_search("Encounter?status=finished&date=eq{today-1y}", date(2024, 2, 29)) == \
        ("Encounter", {"status": "finished", "date": "eq2023-02-28"})
    assert expand_search("Appointment?date=ge{today}&date=lt{today+1w}", date(2026, 3, 2)) == \
        ("Appointment", {"date": ["ge2026-03-02", "lt2026-03-09"]})
