"""The outcome report: the metrics of docs/metrics.md over the appointments whose start falls in
a period, overall and by journey, step, channel, language, location, practitioner and service
type (pure: the facts come from outreach.reports.facts)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from outreach.reports.experiments import experiments
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


def _confirmed(f: AppointmentFacts) -> bool:
    return f.reached and "confirm" in f.intents()


def _by_patient(f: AppointmentFacts) -> bool:
    return f.status == "cancelled" and (f.cancelled_by == "patient" or "cancel" in f.intents())


# Each counted figure as a test of one appointment (docs/metrics.md): the report counts them, the
# dashboard's drill-down lists them.
FIGURES: dict[str, Callable[[AppointmentFacts], bool]] = {
    "appointments": lambda f: True,
    "reached": lambda f: f.reached,
    "unreached": lambda f: not f.reached,
    "confirmed": _confirmed,
    "cancelled": lambda f: f.status == "cancelled",
    "cancelled_by_patient": _by_patient,
    "cancel_requests_by_reply": lambda f: "cancel" in f.intents(),
    "fulfilled": lambda f: f.status in FULFILLED,
    "no_show": lambda f: f.status == "noshow",
    "responded": lambda f: f.reached and bool(f.intents() - {"empty"}),
    "opt_outs": lambda f: f.reached and "stop" in f.intents(),
}


def counts(facts: Iterable[AppointmentFacts]) -> dict[str, Any]:
    """The headline figures of a set of appointments (definitions: docs/metrics.md)."""
    rows = list(facts)
    found = {name: sum(test(f) for f in rows) for name, test in FIGURES.items()}
    responded = found.pop("responded")
    return {
        **found,
        "no_show_rate": _rate(found["no_show"], found["no_show"] + found["fulfilled"]),
        "confirmation_rate": _rate(found["confirmed"], found["reached"]),
        "response_rate": _rate(responded, found["reached"]),
        "opt_out_rate": _rate(found["opt_outs"], found["reached"]),
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
        lowest, highest = answer.scale or ((survey.min, survey.max) if survey else (0, 10))
        on_ten = (answer.score - lowest) / (highest - lowest) * 10 if highest > lowest else 0
        promoters += on_ten >= 9
        detractors += on_ten <= 6
        low += answer.low if answer.low is not None else (
            answer.score <= (survey.low_at_most if survey else default_low))
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
        "experiments": experiments(chosen),
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



def weekly(facts: list[AppointmentFacts], zone: Any) -> list[tuple[date, dict[str, Any]]]:
    """The headline figures per week (Monday first, local time) of appointment start."""
    weeks: dict[date, list[AppointmentFacts]] = defaultdict(list)
    for item in facts:
        day = item.start.astimezone(zone).date()
        weeks[day - timedelta(days=day.weekday())].append(item)
    return [(week, counts(weeks[week])) for week in sorted(weeks)]


def drill_down(facts: list[AppointmentFacts], filters: Mapping[str, str],
               figure: str) -> list[AppointmentFacts]:
    """The appointments behind one figure of the report (with its filters)."""
    test = FIGURES.get(figure)
    if test is None:
        raise UnknownFilter("figure", figure, sorted(FIGURES))
    return [f for f in apply_filters(facts, filters) if test(f)]
