"""`outreach simulate` on a synthetic month of a hospital's scheduling: versions per second of
the whole forecast (ingest, planning, the clock run through the month, send-time checks,
rendering, counting), and what a month of a large hospital would take at that rate.

The export: N patients (mobile, email or both; 1 in 5 Spanish-speaking, 1 in 10 in another time
zone, a few with neither; birth dates spread over the year), each with one appointment booked
over the month, 1 in 7 of them a procedure; 20% are rescheduled, 8% cancelled, and every kept
visit gets its outcome: a no-show (1 in 8), or an ambulatory Encounter that starts and finishes
and the appointment fulfilled. Each is a new version with its own meta.lastUpdated, as an EHR
export or a month of rest-hooks would hold them. The journeys: the shipped appointment reminders
and the library's procedure preparation, no-show recall, post-visit follow-up, satisfaction
survey and birthday greeting (not the annual recall: simulate does not apply its search's date,
so it would recall every visit of the month at once).

The forecast runs twice: in one process, then split by patient across one worker process per
CPU (the two must be byte-identical). Baseline for both, in the same run on the same export:
validating every version as R4 (what any consumer of the export pays before doing anything with
it). The notes project 300,000 versions at each rate, and on a 16-core server by carrying the
gain measured here from 1 to N workers on linearly: an extrapolation, as good as the machine
it was measured on was idle."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.result import Result
from connector.resources import validate_resource
from outreach import SHIPPED_JOURNEYS
from outreach.core.settings import load_settings
from outreach.simulate import Forecast, as_json, simulate
from outreach.simulate_shards import cpus

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
LARGE_HOSPITAL_VERSIONS = 300_000  # ~75,000 appointments a month, ~4 versions each
SERVER_CORES = 16  # the projection's server
JOURNEYS = [SHIPPED_JOURNEYS / "appointment-reminders.yaml",
            *(SHIPPED_JOURNEYS / "library" / f"{name}.yaml" for name in (
                "procedure-preparation", "no-show-recall", "post-visit-follow-up",
                "satisfaction-survey", "birthday-greeting"))]
_ZONE = {"url": "http://hl7.org/fhir/StructureDefinition/timezone",
         "valueCode": "America/Chicago"}
_PROCEDURE = [{"coding": [{"system": "http://example.org/service-category",
                           "code": "procedure"}]}]
_AMBULATORY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _patient(i: int, rng: random.Random) -> dict[str, Any]:
    telecom = []
    kind = rng.random()
    if kind < 0.85:
        telecom.append({"system": "phone", "value": f"+1555{i:07d}", "use": "mobile"})
    if kind > 0.6 or kind < 0.05:
        telecom.append({"system": "email", "value": f"p{i}@example.org"})
    born = date(1940, 1, 1) + timedelta(days=rng.randint(0, 365 * 80))
    patient: dict[str, Any] = {"resourceType": "Patient", "id": f"p{i}", "active": True,
                               "name": [{"given": [f"Given{i}"], "family": "Family"}],
                               "telecom": telecom, "birthDate": born.isoformat()}
    if rng.random() < 0.2:
        patient["communication"] = [{"language": {"coding": [
            {"system": "urn:ietf:bcp:47", "code": "es"}]}, "preferred": True}]
    if rng.random() < 0.1:
        patient["extension"] = [_ZONE]
    return patient


def _visit(i: int, rng: random.Random, resources: list[dict[str, Any]]) -> None:
    """One appointment's versions, and its encounter's when the patient comes."""
    versions: dict[str, int] = {}

    def emit(resource: dict[str, Any], at: datetime) -> None:
        version = versions[resource["id"]] = versions.get(resource["id"], 0) + 1
        resources.append({**resource, "meta": {"versionId": str(version),
                                               "lastUpdated": _instant(at)}})

    booked_at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 24))
    start = (booked_at + timedelta(days=rng.randint(1, 21))).replace(
        minute=rng.choice([0, 15, 30, 45]), hour=rng.randint(8, 17))
    appointment: dict[str, Any] = {
        "resourceType": "Appointment", "id": f"a{i}", "status": "booked",
        "start": _instant(start), "end": _instant(start + timedelta(minutes=20)),
        "participant": [{"actor": {"reference": f"Patient/p{i}"}, "status": "accepted"}]}
    if rng.random() < 1 / 7:
        appointment["serviceCategory"] = _PROCEDURE
    emit(appointment, booked_at)
    if rng.random() < 0.2 and start - booked_at > timedelta(days=2):
        moved = start + timedelta(days=rng.randint(1, 5))
        appointment = {**appointment, "start": _instant(moved),
                       "end": _instant(moved + timedelta(minutes=20))}
        emit(appointment, booked_at + (start - booked_at) / 2)
        start = moved
    if rng.random() < 0.08:
        emit({**appointment, "status": "cancelled"}, start - timedelta(hours=rng.randint(3, 40)))
        return
    if rng.random() < 0.125:
        emit({**appointment, "status": "noshow"}, start + timedelta(minutes=40))
        return
    arrived, left = start + timedelta(minutes=rng.randint(-10, 15)), start + timedelta(
        minutes=rng.randint(25, 60))
    encounter: dict[str, Any] = {
        "resourceType": "Encounter", "id": f"e{i}", "status": "in-progress",
        "class": _AMBULATORY, "subject": {"reference": f"Patient/p{i}"},
        "appointment": [{"reference": f"Appointment/a{i}"}],
        "period": {"start": _instant(arrived)}}
    emit(encounter, arrived)
    emit({**encounter, "status": "finished",
          "period": {"start": _instant(arrived), "end": _instant(left)}}, left)
    emit({**appointment, "status": "fulfilled"}, left + timedelta(minutes=1))


def export(appointments: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    resources: list[dict[str, Any]] = []
    for i in range(appointments):
        resources.append(_patient(i, rng))
        _visit(i, rng, resources)
    return resources


def journeys(into: Path) -> Path:
    """The bench's journeys, in one folder as `--rules` takes them."""
    for path in JOURNEYS:
        shutil.copy(path, into / path.name)
    return into


def _forecast(rules: Path, resources: list[dict[str, Any]], workers: int
              ) -> tuple[Forecast, float, float]:
    """The forecast, its wall time and this process's CPU time (all of it with one worker: a
    measure that other load on the machine disturbs less)."""
    settings = load_settings(database_url="sqlite:///unused.db")
    began, cpu = time.perf_counter(), time.process_time()
    forecast = simulate(rules, resources, START, settings, workers=workers)
    return forecast, time.perf_counter() - began, time.process_time() - cpu


def run(appointments: int) -> list[Result]:
    resources = export(appointments)
    versions = len(resources)
    began = time.perf_counter()
    for resource in resources:
        validate_resource(resource)
    baseline = versions / (time.perf_counter() - began)
    workers = cpus()
    with tempfile.TemporaryDirectory(prefix="bench-journeys-") as tmp:
        rules = journeys(Path(tmp))
        single, alone, cpu = _forecast(rules, resources, 1)
        sharded, together, _ = _forecast(rules, resources, workers)
    if as_json(sharded) != as_json(single):
        raise AssertionError(f"the forecast with {workers} workers differs from one worker's")
    one, many = versions / alone, versions / together
    sent = single.summary["messages"]
    # Scaling measured here from 1 to `workers` processes, carried on linearly to a server's
    # cores: an extrapolation, honest only as far as those cores are as fast and as idle.
    gain = (many / one - 1) / (workers - 1) if workers > 1 else 1.0
    server = one * (1 + gain * (SERVER_CORES - 1))
    return [
        Result("simulate_versions_per_s", one, "/s", baseline,
               f"1 worker: {versions:,} versions, {sent:,} messages in {alone:.1f} s "
               f"(CPU {cpu:.1f} s); "
               f"{LARGE_HOSPITAL_VERSIONS:,} versions ≈ {_minutes(one)}"),
        Result("simulate_versions_per_s_all_cpus", many, "/s", baseline,
               f"{workers} workers (the CPUs here): {together:.1f} s, ×{many / one:.2f} of 1 "
               f"worker, same forecast; {LARGE_HOSPITAL_VERSIONS:,} versions ≈ "
               f"{_minutes(many)}; {SERVER_CORES} cores ≈ {_minutes(server)} if each added "
               f"worker gains what worker {workers} gained here ({gain:.0%})"),
    ]


def _minutes(rate: float) -> str:
    return f"{LARGE_HOSPITAL_VERSIONS / rate / 60:.1f} min"
