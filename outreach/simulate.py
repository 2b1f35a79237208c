"""`outreach simulate`: what the journeys would plan for an export, through the real planner.

The resources (a Bundle, or NDJSON one resource per line) go through the real ingest and
enrollment code on a throw-away SQLite store with a simulated clock: Patients first (their time
zone, language and contacts), then every other version in `meta.lastUpdated` order, each
processed at max(--now, its lastUpdated). Scheduled journeys run the tick due at --now over the
input resources of their search's type (the search parameters need a FHIR server and are not
applied; the `when` filter is). Nothing is sent and no EHR is called."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connector.changes import version_of
from connector.errors import InvalidResource
from connector.resources import validate_resource
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import Settings
from outreach.intake import campaigns
from outreach.intake.ingest import ingest
from outreach.planning.enrollment import patient_zone
from outreach.runtime import build_runtime, load_templates
from outreach.store.db import make_engine, make_session_factory
from outreach.store.models import Base, Enrollment, ScheduledStep, StepState
from rules import JourneySet, load_journeys
from rules.recipients import choose_recipient


class InputError(Exception):
    """The input file is not a Bundle or NDJSON of FHIR resources."""


@dataclass(frozen=True)
class PlanRow:
    patient: str
    journey: str
    step: str
    about: str
    state: str
    due_utc: str
    due_local: str
    channel: str | None
    to_caregiver: bool
    why: str | None


def read_resources(path: Path) -> list[dict[str, Any]]:
    """Every resource in a Bundle (entry.resource), a single resource, or NDJSON."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        if whole.get("resourceType") == "Bundle":
            return [e["resource"] for e in whole.get("entry", []) if "resource" in e]
        return [whole]
    resources = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resources.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON: {exc.msg}") from exc
    return resources


class _InputSource:
    """Campaign searches over the input resources (by type; parameters are not applied)."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self._resources = resources

    def search(self, resource_type: str,
               params: Mapping[str, str | int | list[str]] | None = None
               ) -> Iterable[dict[str, Any]]:
        return [r for r in self._resources if r.get("resourceType") == resource_type]


def _ordered(resources: list[dict[str, Any]], listened: set[str]) -> Iterator[dict[str, Any]]:
    # Patients (and anything no journey listens to) first, so plans see their zone; then the
    # versions in the order the EHR made them.
    context = [r for r in resources if r["resourceType"] not in listened]
    changes = [r for r in resources if r["resourceType"] in listened]
    yield from context
    yield from sorted(changes, key=lambda r: version_of(r)[1] or datetime.min.replace(tzinfo=UTC))


def _runtime(settings: Settings, journeys: JourneySet, now: datetime, db: Path) -> Runtime:
    engine = make_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    return build_runtime(settings, sessions=make_session_factory(engine),
                         clock=SimulatedClock(now), journeys=journeys, ehr=None, channels={},
                         enqueue=CollectingEnqueuer())


def _rows(rt: Runtime, patients: dict[str, dict[str, Any]]) -> list[PlanRow]:
    rows = []
    with rt.sessions() as session:
        query = select(ScheduledStep, Enrollment).join(Enrollment).order_by(
            ScheduledStep.due_at, Enrollment.id, ScheduledStep.id)
        for step, enrollment in session.execute(query).all():
            zone = patient_zone(session, enrollment.patient, lambda _p: rt.settings.zone)
            rows.append(_row(rt, step, enrollment, patients, zone))
    return rows


def _row(rt: Runtime, step: ScheduledStep, enrollment: Enrollment,
         patients: dict[str, dict[str, Any]], zone: Any) -> PlanRow:
    journey = rt.journeys.by_name(enrollment.journey)
    spec = journey.step(step.step_id) if journey else None
    why, channel, caregiver = step.reason, None, False
    pending = step.state in (StepState.SCHEDULED, StepState.QUEUED)
    if spec is not None and journey is not None and pending:
        mode = spec.recipient or journey.spec.recipient
        record = patients.get(enrollment.patient)
        found = choose_recipient(mode, record, spec.channel, step.due_at) if record else None
        if record is None:
            why = "patient not in the input: contact unknown"
        elif found is None:
            why = f"would be skipped: no {mode} contact among [{', '.join(spec.channel)}]"
        else:
            channel, caregiver = found.channel, found.to_caregiver
    return PlanRow(
        patient=enrollment.patient, journey=enrollment.journey, step=step.step_id,
        about=enrollment.anchor_reference, state=str(step.state),
        due_utc=step.due_at.isoformat(timespec="minutes"),
        due_local=step.due_at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
        channel=channel, to_caregiver=caregiver, why=why,
    )


def simulate(
    rules: Path, resources: list[dict[str, Any]], now: datetime, settings: Settings
) -> tuple[list[PlanRow], list[str]]:
    """The plan for these resources, and notes (invalid resources, campaign runs)."""
    journeys = load_journeys(rules, load_templates(settings).names)
    notes: list[str] = []
    valid = []
    for resource in resources:
        try:
            valid.append(validate_resource(resource))
        except InvalidResource as exc:
            ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            notes.append(f"skipped invalid {ref}: {exc}")
    with tempfile.TemporaryDirectory(prefix="outreach-simulate-") as tmp:
        rt = _runtime(settings, journeys, now, Path(tmp) / "simulate.db")
        try:
            clock = rt.clock
            assert isinstance(clock, SimulatedClock)
            for resource in _ordered(valid, set(journeys.resource_types)):
                _, updated = version_of(resource)
                clock.set(max(now, updated) if updated else now)
                ingest(rt, resource, source="simulate")
            clock.set(now)
            for result in campaigns.run_due_campaigns(rt, _InputSource(valid)):
                notes.append(f"campaign {result.journey} tick {result.run_key}: "
                             f"{result.matched} matched, {result.enrolled} enrolled")
            patients = {f"Patient/{r['id']}": r for r in valid
                        if r["resourceType"] == "Patient" and r.get("id")}
            return _rows(rt, patients), notes
        finally:
            rt.engine.dispose()


def as_json(rows: list[PlanRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False)


def as_table(rows: list[PlanRow]) -> str:
    header = ("patient", "journey", "step", "state", "local time", "UTC", "channel", "why")
    cells = [header] + [
        (r.patient, r.journey, r.step, r.state, r.due_local, r.due_utc,
         (r.channel or "-") + (" (caregiver)" if r.to_caregiver else ""), r.why or "")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
             .rstrip() for row in cells]
    return "\n".join(lines)
