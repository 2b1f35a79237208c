"""`outreach simulate` on a synthetic month of a hospital's scheduling: versions per second of
the whole forecast (ingest, planning, the clock run through the month, send-time checks,
rendering, counting), and what a month of a large hospital would take at that rate.

The export: N patients (mobile, email or both; 1 in 5 Spanish-speaking, a few with neither),
each with one appointment booked over the month; 20% are rescheduled, 8% cancelled, and every
kept visit gets its outcome (fulfilled, 1 in 8 a no-show), each a new version with its own
meta.lastUpdated, as an EHR export or a month of rest-hooks would hold them.

Baseline, in the same run on the same export: validating every version as R4 (what any
consumer of the export pays before doing anything with it)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.result import Result
from connector.resources import validate_resource
from outreach import SHIPPED_JOURNEYS
from outreach.core.settings import load_settings
from outreach.simulate import simulate

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
LARGE_HOSPITAL_VERSIONS = 300_000  # ~100,000 appointments a month, ~3 versions each


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def export(appointments: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    resources: list[dict[str, Any]] = []
    for i in range(appointments):
        telecom = []
        kind = rng.random()
        if kind < 0.85:
            telecom.append({"system": "phone", "value": f"+1555{i:07d}", "use": "mobile"})
        if kind > 0.6 or kind < 0.05:
            telecom.append({"system": "email", "value": f"p{i}@example.org"})
        patient: dict[str, Any] = {"resourceType": "Patient", "id": f"p{i}", "active": True,
                                   "name": [{"given": [f"Given{i}"], "family": "Family"}],
                                   "telecom": telecom}
        if rng.random() < 0.2:
            patient["communication"] = [{"language": {"coding": [
                {"system": "urn:ietf:bcp:47", "code": "es"}]}, "preferred": True}]
        resources.append(patient)
        booked_at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 24))
        start = (booked_at + timedelta(days=rng.randint(1, 21))).replace(
            minute=rng.choice([0, 15, 30, 45]), hour=rng.randint(8, 17))
        appointment = {"resourceType": "Appointment", "id": f"a{i}", "status": "booked",
                       "start": _instant(start), "end": _instant(start + timedelta(minutes=20)),
                       "participant": [{"actor": {"reference": f"Patient/p{i}"},
                                        "status": "accepted"}]}
        version = 1

        def emit(resource: dict[str, Any], at: datetime) -> None:
            nonlocal version
            resources.append({**resource, "meta": {"versionId": str(version),
                                                   "lastUpdated": _instant(at)}})
            version += 1

        emit(appointment, booked_at)
        if rng.random() < 0.2 and start - booked_at > timedelta(days=2):
            moved = start + timedelta(days=rng.randint(1, 5))
            appointment = {**appointment, "start": _instant(moved),
                           "end": _instant(moved + timedelta(minutes=20))}
            emit(appointment, booked_at + (start - booked_at) / 2)
            start = moved
        if rng.random() < 0.08:
            cancelled_at = start - timedelta(hours=rng.randint(3, 40))
            emit({**appointment, "status": "cancelled"}, cancelled_at)
            continue
        emit({**appointment, "status": "noshow" if rng.random() < 0.125 else "fulfilled"},
             start + timedelta(minutes=40))
    return resources


def run(appointments: int) -> list[Result]:
    resources = export(appointments)
    versions = len(resources)
    began = time.perf_counter()
    for resource in resources:
        validate_resource(resource)
    baseline = versions / (time.perf_counter() - began)
    settings = load_settings(database_url="sqlite:///unused.db")
    began = time.perf_counter()
    forecast = simulate(Path(SHIPPED_JOURNEYS), resources, START, settings)
    elapsed = time.perf_counter() - began
    rate = versions / elapsed
    minutes = LARGE_HOSPITAL_VERSIONS / rate / 60
    sent = forecast.summary["messages"]
    return [Result("simulate_versions_per_s", rate, "/s", baseline,
                   f"{versions:,} versions, {sent:,} messages in {elapsed:.1f} s; "
                   f"{LARGE_HOSPITAL_VERSIONS:,} versions ≈ {minutes:.0f} min")]
