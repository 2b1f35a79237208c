"""Build the outcome report for a period from the store, in the hospital's time zone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from outreach.core.ports import Runtime
from outreach.reports.facts import load_appointments, load_messages, load_scores
from outreach.reports.outcomes import Period, Pricing, report


class BadPeriod(ValueError):
    """`to` before `from`, or a period too long to report in one go."""


MAX_DAYS = 366


def period(first: date, last: date) -> Period:
    if last < first:
        raise BadPeriod(f"--to {last} is before --from {first}")
    if (last - first).days >= MAX_DAYS:
        raise BadPeriod(f"a report covers at most {MAX_DAYS} days; split the period")
    return Period(first, last)


def outcome_report(rt: Runtime, chosen: Period,
                   filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    zone = rt.settings.zone
    start = datetime.combine(chosen.first, time(0), zone)
    end = datetime.combine(chosen.last + timedelta(days=1), time(0), zone)
    with rt.sessions() as session:
        facts = load_appointments(session, start, end)
        sent = load_messages(session, start, end, zone)
        scores = load_scores(session, start, end)
    pricing = Pricing(rt.settings.sms_price_per_segment, rt.settings.currency)
    return report(chosen, rt.settings.timezone, facts, sent, scores, rt.journeys, pricing,
                  dict(filters or {}), rt.settings.low_score_threshold)
