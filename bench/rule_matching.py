"""Rule matching: changes/s through `decide` with 50 journeys loaded (the 7 shipped ones and
variants of them), for a mix of Appointment and Encounter changes, each change's distinct
conditions evaluated once (SharedResults), as outreach.planning.enrollment does.

Baseline, in the same run on the same changes: evaluating the same journeys' `when` conditions
alone with fhirpathpy (compiled once per rule; no change-kind matching, anchors or decisions):
what matching cost before conditions were compiled to Python (rules/fhirpath_fast.py).

A second row, `rule_matching_conditions`, isolates the evaluator: the same `when` conditions for
every journey, through `Condition` (fast path, no sharing) against fhirpathpy."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.result import Result
from outreach import SHIPPED_JOURNEYS
from rules import ChangeKind, ResourceChange, decide
from rules.fhirpath import SharedResults
from rules.fhirpath_fast import is_true
from rules.loader import JourneySet, LoadedJourney, journey_files, parse_journey

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
JOURNEY_COUNT = 50


def journeys(count: int = JOURNEY_COUNT) -> JourneySet:
    """The shipped event journeys, renamed until there are `count` of them."""
    texts = [f.read_text() for f in [*journey_files(SHIPPED_JOURNEYS),
                                     *journey_files(SHIPPED_JOURNEYS / "library")]]
    loaded: list[LoadedJourney] = []
    for i in range(count):
        text = texts[i % len(texts)]
        name = text.split("journey: ", 1)[1].split("\n", 1)[0]
        loaded.append(parse_journey(text.replace(f"journey: {name}", f"journey: {name}-{i}"),
                                    f"bench-{i}.yaml"))
    return JourneySet(loaded)


def _appointment(i: int, rng: random.Random) -> dict[str, Any]:
    start = NOW + timedelta(hours=rng.randint(-48, 24 * 14))
    return {
        "resourceType": "Appointment", "id": f"a{i}",
        "status": rng.choice(["booked", "booked", "booked", "cancelled", "noshow", "pending"]),
        "start": start.isoformat().replace("+00:00", "Z"),
        "serviceCategory": [{"coding": [{"code": rng.choice(["procedure", "general"])}]}],
        "participant": [{"actor": {"reference": f"Patient/p{i}"}, "status": "accepted"}],
    }


def _encounter(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "Encounter", "id": f"e{i}",
        "status": rng.choice(["finished", "in-progress"]),
        "class": {"code": rng.choice(["AMB", "IMP"])},
        "subject": {"reference": f"Patient/p{i}"},
        "period": {"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T09:00:00Z"},
    }


def changes(count: int, seed: int = 7) -> list[ResourceChange]:
    rng = random.Random(seed)
    made = []
    for i in range(count):
        current = _appointment(i, rng) if i % 3 else _encounter(i, rng)
        previous = None
        if rng.random() < 0.6:
            previous = {**current, "status": "booked" if current["resourceType"] ==
                        "Appointment" else "in-progress"}
        kind = ChangeKind.UPDATED if previous else ChangeKind.CREATED
        made.append(ResourceChange(current["resourceType"], current["id"], "1", kind,
                                   current, previous))
    return made


def _match_all(js: JourneySet, batch: list[ResourceChange]) -> int:
    enrolled = 0
    for change in batch:
        assert change.current is not None
        shared = SharedResults(change.current, change.previous, NOW)
        for journey in js.for_resource(change.resource_type):
            enrolled += decide(journey, change, NOW, None, False, shared).action == "enroll"
    return enrolled


def _conditions_fast(js: JourneySet, batch: list[ResourceChange]) -> int:
    hits = 0
    for change in batch:
        assert change.current is not None
        for journey in js.for_resource(change.resource_type):
            if journey.when is not None:
                hits += journey.when(change.current, NOW, change.previous)
    return hits


def _conditions_fhirpathpy(js: JourneySet, batch: list[ResourceChange]) -> int:
    hits = 0
    for change in batch:
        assert change.current is not None
        for journey in js.for_resource(change.resource_type):
            if journey.when is not None:
                result = journey.when.evaluate_reference(change.current, NOW, change.previous)
                hits += is_true(result)
    return hits


def _rate(fn: Any, js: JourneySet, batch: list[ResourceChange]) -> float:
    fn(js, batch[:50])  # warm-up
    began = time.perf_counter()
    fn(js, batch)
    return len(batch) / (time.perf_counter() - began)


def run(iterations: int = 100) -> list[Result]:
    js = journeys()
    batch = changes(max(iterations, 10) * 20)
    # fhirpathpy runs ~250 changes/s: a fifth of the changes (same mix) keeps the run short.
    slow_batch = batch[: max(len(batch) // 5, 60)]
    per_type = {t: len(js.for_resource(t)) for t in js.resource_types}
    matched = _rate(_match_all, js, batch)
    fast = _rate(_conditions_fast, js, batch)
    floor = _rate(_conditions_fhirpathpy, js, slow_batch)
    note = (f"{len(js.journeys)} journeys ({', '.join(f'{n} {t}' for t, n in per_type.items())}),"
            f" {len(batch)} changes")
    return [
        Result("rule_matching", matched, "changes/s", floor, note),
        Result("rule_matching_conditions", fast, "changes/s", floor,
               "when conditions only: compiled Python vs fhirpathpy"),
    ]


if __name__ == "__main__":  # pragma: no cover
    for result in run():
        print(result)
