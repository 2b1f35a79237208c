"""The outcome report as FHIR: the `Measure` we publish (what each figure means) and a summary
`MeasureReport` for one period, so the hospital's own analytics can read them (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from connector.polling import fhir_instant

MEASURE_URL = "http://fhir-outreach.org/Measure/outreach-outcomes"
MEASURE_VERSION = "1"
GROUP_SYSTEM = "http://fhir-outreach.org/CodeSystem/outreach-measure"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"

# group code → (title, numerator, denominator); a group without a denominator is a count.
GROUPS: tuple[tuple[str, str, str, str | None], ...] = (
    ("appointments", "Appointments enrolled in a journey", "appointments", None),
    ("reached", "Appointments whose patient was reached", "reached", None),
    ("fulfilled", "Appointments fulfilled", "fulfilled", None),
    ("no-show", "Appointments missed", "no_show", None),
    ("cancelled-by-patient", "Appointments cancelled by the patient", "cancelled_by_patient",
     None),
    ("no-show-rate", "No-show rate: no-show / (no-show + fulfilled)", "no_show", "attended_or_not"),
    ("confirmation-rate", "Confirmation rate: confirmed by reply / reached", "confirmed",
     "reached"),
    ("opt-out-rate", "Opt-out rate: opted out / reached", "opt_outs", "reached"),
)
# What each population counts (R4 requires `criteria` on every Measure population): the figure's
# definition in words, since the figures are computed by us, not by a CQL engine.
CRITERIA: dict[str, str] = {
    "appointments": "Appointments whose start falls in the period and that were enrolled in at "
                    "least one journey",
    "reached": "Of those, the ones with a message sent or delivered (not refused, undelivered "
               "or failed)",
    "fulfilled": "Of those, the ones whose status is fulfilled, arrived or checked-in",
    "no_show": "Of those, the ones whose status is noshow",
    "cancelled_by_patient": "Of those, the ones cancelled with cancelationReason pat or after "
                            "the patient replied to cancel",
    "attended_or_not": "Of those, the ones whose status is noshow, fulfilled, arrived or "
                       "checked-in",
    "confirmed": "Of the reached, the ones whose patient replied to confirm",
    "opt_outs": "Of the reached, the ones whose patient replied to opt out (STOP)",
}


def _criteria(figure: str) -> dict[str, Any]:
    return {"language": "text/plain", "expression": CRITERIA[figure]}


def build_measure(identifier_system: str) -> dict[str, Any]:
    return {
        "resourceType": "Measure",
        "identifier": [{"system": identifier_system, "value": "measure-outreach-outcomes"}],
        "url": MEASURE_URL,
        "version": MEASURE_VERSION,
        "name": "OutreachOutcomes",
        "title": "Patient outreach outcomes",
        "status": "active",
        "description": "What happened to the appointments whose start falls in the period and "
                       "that were enrolled in an outreach journey (definitions: docs/metrics.md "
                       "of fhir-outreach).",
        "scoring": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-scoring",
                                "code": "proportion"}]},
        "group": [{
            "code": {"coding": [{"system": GROUP_SYSTEM, "code": code}], "text": title},
            "population": [{"code": {"coding": [{"system": POPULATION, "code": part}]},
                            "criteria": _criteria(figure)}
                           for part, figure in ((("numerator", numerator),
                                                 ("denominator", denominator)) if denominator
                                                else (("initial-population", numerator),))],
        } for code, title, numerator, denominator in GROUPS],
    }


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    identifier_system: str
    first: date
    last: date  # inclusive
    created: datetime
    figures: Mapping[str, Any]  # the outcome report's headline figures
    reporter: str | None = None  # Organization/… when known


def _population(code: str, count: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": POPULATION, "code": code}]}, "count": count}


def build_measure_report(period: PeriodFigures) -> dict[str, Any]:
    figures = dict(period.figures)
    figures["attended_or_not"] = figures["no_show"] + figures["fulfilled"]
    groups = []
    for code, title, numerator, denominator in GROUPS:
        group: dict[str, Any] = {"code": {"coding": [{"system": GROUP_SYSTEM, "code": code}],
                                          "text": title}}
        if denominator is None:
            group["population"] = [_population("initial-population", figures[numerator])]
        else:
            top, bottom = figures[numerator], figures[denominator]
            group["population"] = [_population("numerator", top),
                                   _population("denominator", bottom)]
            if bottom:
                group["measureScore"] = {"value": round(top / bottom, 4)}
        groups.append(group)
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "identifier": [{"system": period.identifier_system,
                        "value": f"outcomes-{period.first.isoformat()}-{period.last.isoformat()}"}],
        "status": "complete",
        "type": "summary",
        "measure": f"{MEASURE_URL}|{MEASURE_VERSION}",
        "date": fhir_instant(period.created),
        "period": {"start": period.first.isoformat(), "end": period.last.isoformat()},
        "group": groups,
    }
    if period.reporter:
        report["reporter"] = {"reference": period.reporter}
    return report
