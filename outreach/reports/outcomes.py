"""The outcome report: the metrics of docs/metrics.md over the appointments whose start falls in
a period, overall and by journey, step, channel, language, location, practitioner and service
type (pure: the facts come from outreach.reports.facts)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from outreach.reports.facts import FULFILLED, AppointmentFacts, ScoreFact, SentFact
from rules.loader import JourneySet

DIMENSIONS = ("journey", "step", "channel", "language", "location", "practitioner",
              "service_type")


def _values(facts: AppointmentFacts, dimension: str) -> set[str]:
    if dimension == "journey":
        return set(facts.journeys)
    if dimension == "step":
        return {f"{m.journey}/{m.step}" for m in facts.messages} or {"none sent"}
    if dimension == "channel":
        return facts.channels or {"none"}
    return {str(getattr(facts, dimension))}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def counts(facts: Iterable[AppointmentFacts]) -> dict[str, Any]:
    """The headline figures of a set of appointments (definitions: docs/metrics.md)."""
    rows = list(facts)
    reached = [f for f in rows if f.reached]
    fulfilled = sum(f.status in FULFILLED for f in rows)
    no_show = sum(f.status == "noshow" for f in rows)
    confirmed = sum("confirm" in f.intents() for f in reached)
    responded = sum(bool(f.intents() - {"empty"}) for f in reached)
    opt_outs = sum("stop" in f.intents() for f in reached)
    cancelled = [f for f in rows if f.status == "cancelled"]
    return {
        "appointments": len(rows),
        "reached": len(reached),
        "unreached": len(rows) - len(reached),
        "confirmed": confirmed,
        "cancelled": len(cancelled),
        "cancelled_by_patient": sum(f.cancelled_by == "patient" or "cancel" in f.intents()
                                    for f in cancelled),
        "cancel_requests_by_reply": sum("cancel" in f.intents() for f in rows),
        "fulfilled": fulfilled,
        "no_show": no_show,
        "no_show_rate": _rate(no_show, no_show + fulfilled),
        "confirmation_rate": _rate(confirmed, len(reached)),
        "response_rate": _rate(responded, len(reached)),
        "opt_outs": opt_outs,
        "opt_out_rate": _rate(opt_outs, len(reached)),
    }


def breakdown(facts: list[AppointmentFacts], dimension: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[AppointmentFacts]] = defaultdict(list)
    for item in facts:
        for value in _values(item, dimension):
            groups[value].append(item)
    return {value: counts(groups[value]) for value in sorted(groups)}


def filter_values(facts: list[AppointmentFacts]) -> dict[str, list[str]]:
    """What each filter can be set to in this period."""
    return {d: sorted({v for f in facts for v in _values(f, d)}) for d in DIMENSIONS}


class UnknownFilter(ValueError):
    def __init__(self, dimension: str, value: str, allowed: list[str]) -> None:
        shown = ", ".join(allowed[:50]) + (" …" if len(allowed) > 50 else "")
        super().__init__(f"unknown {dimension} {value!r}; in this period: {shown or 'none'}")
        self.dimension, self.allowed = dimension, allowed


def apply_filters(facts: list[AppointmentFacts],
                  filters: Mapping[str, str]) -> list[AppointmentFacts]:
    """The appointments matching every filter; a value not seen in the period is refused with
    the values that are."""
    allowed = filter_values(facts)
    for dimension, value in filters.items():
        if dimension not in allowed:
            raise UnknownFilter("filter", dimension, list(DIMENSIONS))
        if value not in allowed[dimension]:
            raise UnknownFilter(dimension, value, allowed[dimension])
    return [f for f in facts
            if all(value in _values(f, d) for d, value in filters.items())]


@dataclass(frozen=True, slots=True)
class Pricing:
    price_per_segment: float
    currency: str

    def cost(self, segments: int) -> float:
        return round(segments * self.price_per_segment, 4)


def messages(sent: list[SentFact], pricing: Pricing) -> dict[str, Any]:
    """Volumes per channel and per day, SMS segments and their cost, failures by reason."""
    accepted = [m for m in sent if m.sent]
    per_day: dict[tuple[str, str], list[SentFact]] = defaultdict(list)
    for message in accepted:
        per_day[(message.day, message.channel)].append(message)
    segments = sum(m.segments for m in accepted)
    return {
        "messages": dict(sorted(Counter(m.channel for m in accepted).items())),
        "segments": segments,
        "cost": {"amount": pricing.cost(segments), "currency": pricing.currency,
                 "price_per_segment": pricing.price_per_segment},
        "messages_per_day": [
            {"day": day, "channel": channel, "messages": len(items),
             "segments": sum(m.segments for m in items),
             "cost": pricing.cost(sum(m.segments for m in items))}
            for (day, channel), items in sorted(per_day.items())],
        "delivery_failures": dict(sorted(Counter(
            f"{m.channel} {m.error_code or 'no code'}" for m in sent if m.failed).items())),
    }


def surveys(scores: list[ScoreFact], journeys: JourneySet,
            default_low: int) -> dict[str, Any]:
    """Score distribution, an NPS-style score (each answer put on 0–10: 9–10 promote, 0–6
    detract) and the service-recovery Tasks the low scores opened."""
    distribution: Counter[str] = Counter()
    promoters = detractors = low = 0
    for answer in scores:
        spec = journeys.step(answer.journey, answer.step)
        survey = spec.survey if spec is not None else None
        lowest, highest = (survey.min, survey.max) if survey else (0, 10)
        on_ten = (answer.score - lowest) / (highest - lowest) * 10 if highest > lowest else 0
        promoters += on_ten >= 9
        detractors += on_ten <= 6
        low += answer.score <= (survey.low_at_most if survey else default_low)
        distribution[f"{answer.score}/{highest}"] += 1
    total = len(scores)
    return {
        "answers": total,
        "distribution": dict(sorted(distribution.items(), key=lambda kv: _score_key(kv[0]))),
        "nps": round((promoters - detractors) / total * 100, 1) if total else None,
        "service_recovery_tasks": low,
    }


def _score_key(label: str) -> tuple[int, int]:
    score, _, scale = label.partition("/")
    return int(scale), int(score)


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date  # inclusive


def report(period: Period, timezone: str, facts: list[AppointmentFacts],
           sent: list[SentFact], scores: list[ScoreFact], journeys: JourneySet,
           pricing: Pricing, filters: Mapping[str, str], default_low: int) -> dict[str, Any]:
    """The whole report: headline figures of the (filtered) appointments, reached versus
    unreached side by side, why the unreached were not reached, volumes and cost, surveys, and
    every breakdown."""
    chosen = apply_filters(facts, filters)
    unreached_reasons: Counter[str] = Counter(
        reason for f in chosen if not f.reached for reason in set(f.skipped) or {"not sent yet"})
    result: dict[str, Any] = {
        "period": {"from": period.first.isoformat(), "to": period.last.isoformat(),
                   "timezone": timezone},
        "filters": dict(filters),
        **counts(chosen),
        "reached_vs_unreached": {
            "reached": counts(f for f in chosen if f.reached),
            "unreached": counts(f for f in chosen if not f.reached),
        },
        "unreached_reasons": dict(unreached_reasons.most_common()),
        **messages(sent, pricing),
        "surveys": surveys(scores, journeys, default_low),
    }
    for dimension in DIMENSIONS:
        result[f"by_{dimension}"] = breakdown(chosen, dimension)
    return result


HEADLINE: tuple[tuple[str, str], ...] = (
    ("appointments", "appointments (start in the period, enrolled)"),
    ("reached", "reached (a message sent, not failed)"),
    ("confirmed", "confirmed by reply"),
    ("cancelled_by_patient", "cancelled by the patient"),
    ("fulfilled", "fulfilled (arrived, checked in)"),
    ("no_show", "no-show"),
    ("no_show_rate", "no-show rate"),
    ("confirmation_rate", "confirmation rate"),
    ("response_rate", "response rate"),
    ("opt_outs", "opted out"),
)
BREAKDOWN_COLUMNS = ("appointments", "reached", "confirmed", "cancelled_by_patient", "fulfilled",
                     "no_show", "no_show_rate", "confirmation_rate")


def show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value)


def breakdown_rows(result: Mapping[str, Any]) -> Iterable[list[str]]:
    """dimension, value, then BREAKDOWN_COLUMNS: one row per group of every breakdown."""
    for dimension in DIMENSIONS:
        for value, figures in result[f"by_{dimension}"].items():
            yield [dimension, value, *(str(figures[c]) if figures[c] is not None else ""
                                       for c in BREAKDOWN_COLUMNS)]

