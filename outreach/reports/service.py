"""Build the outcome report and the dashboard for a period from the store, in the hospital's
time zone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from outreach.core.ports import Runtime
from outreach.reports import charts
from outreach.reports.access import OfferFact, access_figures, load_offers
from outreach.reports.facts import (
    AppointmentFacts,
    ScoreFact,
    SentFact,
    load_appointments,
    load_encounters,
    load_messages,
    load_scores,
)
from outreach.reports.outcomes import (
    DIMENSIONS,
    Period,
    Pricing,
    UnknownFilter,
    apply_filters,
    drill_down,
    filter_values,
    report,
    weekly,
)
from outreach.reports.recovery import TaskFact, load_tasks, open_tasks, service_recovery


class BadPeriod(ValueError):
    """`to` before `from`, or a period too long to report in one go."""


MAX_DAYS = 366
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)


def period(first: date, last: date) -> Period:
    for day in (first, last):
        if not EARLIEST <= day <= LATEST:
            raise BadPeriod(f"{day} is outside {EARLIEST} to {LATEST}")
    if last < first:
        raise BadPeriod(f"--to {last} is before --from {first}")
    if (last - first).days >= MAX_DAYS:
        raise BadPeriod(f"a report covers at most {MAX_DAYS} days; split the period")
    return Period(first, last)


@dataclass(frozen=True, slots=True)
class _Loaded:
    facts: list[AppointmentFacts]
    sent: list[SentFact]
    scores: list[ScoreFact]
    encounters: dict[str, int]
    tasks: list[TaskFact]
    offers: list[OfferFact]
    backfills: Counter[str]


def _bounds(rt: Runtime, chosen: Period) -> tuple[datetime, datetime]:
    zone = rt.settings.zone
    return (datetime.combine(chosen.first, time(0), zone),
            datetime.combine(chosen.last + timedelta(days=1), time(0), zone))


def _load(rt: Runtime, chosen: Period) -> _Loaded:
    start, end = _bounds(rt, chosen)
    with rt.sessions() as session:
        return _Loaded(load_appointments(session, start, end),
                       load_messages(session, start, end, rt.settings.zone),
                       load_scores(session, start, end), load_encounters(session, start, end),
                       load_tasks(session, start, end),
                       *load_offers(session, start, end, rt.clock.now()))


def _report(rt: Runtime, chosen: Period, loaded: _Loaded,
            filters: Mapping[str, str]) -> dict[str, Any]:
    pricing = Pricing(rt.settings.sms_price_per_segment, rt.settings.currency)
    result = report(chosen, rt.settings.timezone, loaded.facts, loaded.sent, loaded.scores,
                    rt.journeys, pricing, dict(filters), rt.settings.low_score_threshold)
    result["encounters"] = {"enrolled": sum(loaded.encounters.values()),
                            "by_status": loaded.encounters}
    result["service_recovery"] = service_recovery(loaded.tasks, rt.clock.now())
    result["access"] = access_figures(loaded.offers, loaded.backfills)
    return result


def outcome_report(rt: Runtime, chosen: Period,
                   filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    return _report(rt, chosen, _load(rt, chosen), filters or {})


@dataclass(frozen=True, slots=True)
class Dashboard:
    result: dict[str, Any]
    weeks: list[tuple[date, dict[str, Any]]]
    rates_chart: str
    messages_chart: str
    options: dict[str, list[str]]
    dimension: str
    tasks: list[TaskFact]  # still open, service recovery first
    now: datetime


def dashboard(rt: Runtime, chosen: Period, filters: Mapping[str, str],
              dimension: str) -> Dashboard:
    if dimension not in DIMENSIONS:
        raise UnknownFilter("breakdown", dimension, list(DIMENSIONS))
    loaded = _load(rt, chosen)
    result = _report(rt, chosen, loaded, filters)
    weeks = weekly(apply_filters(loaded.facts, filters), rt.settings.zone)
    return Dashboard(result, weeks, charts.rates_by_week(weeks),
                     charts.messages_by_day(result["messages_per_day"]),
                     filter_values(loaded.facts), dimension, open_tasks(loaded.tasks),
                     rt.clock.now())


def appointments_behind(rt: Runtime, chosen: Period, filters: Mapping[str, str],
                        figure: str) -> list[AppointmentFacts]:
    return drill_down(_load(rt, chosen).facts, filters, figure)
