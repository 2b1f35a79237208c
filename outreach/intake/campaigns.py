"""Scheduled journeys (recalls, birthday greetings): run each cron tick once, enroll what matches.

A journey with `trigger.schedule` runs when its cron expression (in OUTREACH_TIMEZONE) has
ticked since its last run. A `campaign_runs` row, unique per journey and tick, is inserted
first, so two beat processes (or a retried task) never run the same tick twice. Each matching
resource is enrolled once per `trigger.cycle` (`year` for a birthday: once a year)."""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.core.ports import Runtime
from outreach.planning.enrollment import Planning, enroll_resource
from outreach.planning.outcomes import JourneyOutcome, due_now, queue_for_outcomes
from outreach.store.db import transaction
from outreach.store.models import CampaignRun
from rules.fhirpath import FhirPathError
from rules.loader import LoadedJourney

log = logging.getLogger(__name__)

# A tick older than this is not run any more (the service was down): the next one will be.
MAX_LATENESS = timedelta(days=1)
_PLACEHOLDER = re.compile(r"\{today(?:(?P<sign>[+-])(?P<num>\d+)(?P<unit>[dwmy]))?\}")


class SearchSource(Protocol):
    """Where a campaign's FHIR search runs (the EHR's client; an in-memory one in simulate)."""

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterable[dict[str, Any]]: ...


@dataclass
class CampaignResult:
    journey: str
    run_key: str
    ran: bool
    matched: int = 0
    enrolled: int = 0
    outcomes: list[JourneyOutcome] | None = None


def _shift(day: date, sign: str, num: int, unit: str) -> date:
    n = num if sign == "+" else -num
    if unit in ("d", "w"):
        return day + timedelta(days=n * (7 if unit == "w" else 1))
    months = day.month - 1 + n * (12 if unit == "y" else 1)
    year, month = day.year + months // 12, months % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expand_search(search: str, today: date) -> tuple[str, dict[str, str | int | list[str]]]:
    """`Patient?birthdate=le{today-65y}` → ("Patient", {"birthdate": "le1961-03-02"}); a
    repeated parameter becomes a list."""
    def replace(match: re.Match[str]) -> str:
        if match["sign"] is None:
            return today.isoformat()
        return _shift(today, match["sign"], int(match["num"]), match["unit"]).isoformat()

    resource_type, _, query = _PLACEHOLDER.sub(replace, search).partition("?")
    params: dict[str, str | int | list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in params:
            previous = params[key]
            params[key] = [*(previous if isinstance(previous, list) else [str(previous)]), value]
        else:
            params[key] = value
    return resource_type.strip(), params


def cycle_key(cycle: str, tick: datetime) -> str:
    """Which repetition an enrollment belongs to: "" (once ever), "2026", "2026-03", ..."""
    if cycle == "year":
        return f"{tick.year}"
    if cycle == "month":
        return f"{tick.year}-{tick.month:02d}"
    if cycle == "week":
        iso = tick.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if cycle == "day":
        return tick.date().isoformat()
    return ""


def due_tick(journey: LoadedJourney, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The latest tick of the journey's schedule at or before now, if recent enough to run."""
    if journey.schedule is None:
        return None
    tick = journey.schedule.previous(now.astimezone(zone), horizon=MAX_LATENESS)
    return tick if tick is not None and now - tick <= MAX_LATENESS else None


def _claim(session: Session, journey: str, run_key: str, now: datetime) -> CampaignRun | None:
    run = CampaignRun(journey=journey, run_key=run_key, started_at=now, matched=0, enrolled=0)
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    return run


def run_campaign(
    rt: Runtime, journey: LoadedJourney, tick: datetime, source: SearchSource
) -> CampaignResult:
    """Run one tick of one scheduled journey, at most once (the campaign_runs unique key)."""
    run_key = tick.isoformat(timespec="minutes")
    now = rt.clock.now()
    planning = Planning(lambda _patient: rt.settings.zone, rt.journeys, rt.settings.cap_policy)
    outcomes: list[JourneyOutcome] = []
    with transaction(rt.sessions) as session:
        run = _claim(session, journey.name, run_key, now)
        if run is None:
            return CampaignResult(journey.name, run_key, ran=False)
        spec = journey.spec.trigger
        assert spec.search is not None, "checked by the schema"
        rtype, params = expand_search(spec.search, tick.date())
        cycle = cycle_key(spec.cycle, tick)
        for resource in source.search(rtype, params):
            try:
                if journey.when is not None and not journey.when(resource, tick):
                    continue
            except FhirPathError:
                log.exception("journey %s failed on %s/%s", journey.spec.journey, rtype,
                              resource.get("id"))
                continue
            run.matched += 1
            outcome = enroll_resource(session, journey, resource, now, planning, cycle,
                                      f"campaign {run_key}")
            run.enrolled += outcome.action == "enroll"
            outcomes.append(outcome)
        run.finished_at = rt.clock.now()
        session.flush()
        ready = due_now(outcomes)
        requests = queue_for_outcomes(session, rt.settings.identifier_system, rt.journeys,
                                      outcomes, now)
        result = CampaignResult(journey.name, run_key, True, run.matched, run.enrolled, outcomes)
    rt.enqueue.send_steps(ready)
    rt.enqueue.write_back(requests)
    log.info("campaign %s run %s: %d matched, %d enrolled", result.journey, run_key,
             result.matched, result.enrolled)
    return result


def run_due_campaigns(rt: Runtime, source: SearchSource | None = None) -> list[CampaignResult]:
    """Every scheduled journey whose tick is due and not yet run (the beat task calls this)."""
    source = source if source is not None else rt.ehr
    if source is None:
        return []
    now, results = rt.clock.now(), []
    for journey in rt.journeys.scheduled:
        tick = due_tick(journey, now, rt.settings.zone)
        if tick is not None:
            results.append(run_campaign(rt, journey, tick, source))
    return results
