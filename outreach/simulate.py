"""`outreach simulate`: a forecast of what the journeys would send for an export, through the
real pipeline.

The resources (a Bundle, or NDJSON one resource per line) go through the real ingest,
enrollment, send-time checks and message rendering on a throw-away SQLite store with a
simulated clock, as the demo runs: Patients first (their time zone, language and contacts),
then every other version in `meta.lastUpdated` order, each processed at max(--now, its
lastUpdated); before each, the clock advances and the steps due by then are sent, so a booking
confirmation due at booking goes out even if the appointment is cancelled hours later. After the
last version the clock runs on to the horizon (--until). Scheduled journeys run the tick due at
--now over the input resources of their search's type (the search parameters need a FHIR server
and are not applied; the `when` filter is). Messages go to channels that only count them; no
EHR is called and nothing is written back. A patient's forecast depends on that patient's
versions alone, so the patients may be split across processes, each with its own store, and the
shards merged: the forecast is the same for any number of workers."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from channels import ConsoleChannel
from connector.changes import version_of
from connector.errors import InvalidResource
from connector.resources import validate_resource
from outreach import simulate_shards
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.core.settings import Settings
from outreach.intake import campaigns
from outreach.intake.ingest import IngestResult, ingest
from outreach.planning.enrollment import patient_zone
from outreach.reports.outcomes import Pricing
from outreach.runtime import build_runtime, load_templates
from outreach.sending.send import SendOutcome
from outreach.store.db import make_engine, make_session_factory
from outreach.store.ingested import IngestedEhr
from outreach.store.models import (
    Base,
    DeliveryAttempt,
    Enrollment,
    ScheduledStep,
    StepState,
)
from outreach.worker.inprocess import InProcess
from outreach.writeback import outbox
from rules import JourneySet, load_journeys
from rules.recipients import choose_recipient

HORIZON = timedelta(days=7)  # after the last change or visit, by default
# What a forecast counts, per shard and in all.
_COUNTED = ("steps", "day", "hour", "channel", "journey", "when planned", "at send time")


class InputError(Exception):
    """The input file is not a Bundle or NDJSON of FHIR resources."""


@dataclass(frozen=True)
class PlanRow:
    patient: str
    journey: str
    step: str
    about: str
    state: str  # sent | skipped | cancelled | failed | scheduled (beyond the horizon)
    due_utc: str  # when it was sent, or is due
    due_local: str
    channel: str | None
    to_caregiver: bool
    why: str | None


@dataclass
class Forecast:
    rows: list[PlanRow]
    notes: list[str]
    summary: dict[str, Any]


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


class _StoreEhr(IngestedEhr):
    """The store's versions as the EHR, each resource's read kept until the forecast ingests
    that resource again: ingest alone writes the versions, and the send-time checks read the
    same anchors and patients over and over. A read still returns a new document each time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self._kept: dict[tuple[str, str], str] = {}

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        kept = self._kept.get((resource_type, resource_id))
        if kept is None:
            found = super().read(resource_type, resource_id)  # not found: asked again next time
            kept = self._kept[(resource_type, resource_id)] = json.dumps(found)
        document: dict[str, Any] = json.loads(kept)
        return document

    def forget(self, resource: dict[str, Any]) -> None:
        """Before the resource is ingested (its stored version may change)."""
        self._kept.pop((resource["resourceType"], resource.get("id", "")), None)


def _ordered(resources: list[dict[str, Any]], listened: set[str]) -> Iterator[dict[str, Any]]:
    # Patients (and anything no journey listens to) first, so plans see their zone; then the
    # versions in the order the EHR made them.
    context = [r for r in resources if r["resourceType"] not in listened]
    changes = [r for r in resources if r["resourceType"] in listened]
    yield from context
    yield from sorted(changes, key=lambda r: version_of(r)[1] or datetime.min.replace(tzinfo=UTC))


def _throwaway(dbapi_connection: Any, _record: Any) -> None:
    # A forecast's store is deleted afterwards: nothing needs to survive a crash.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.execute("PRAGMA journal_mode=MEMORY")
    cursor.close()


def _runtime(settings: Settings, journeys: JourneySet, now: datetime, db: Path,
             sink: TextIO) -> Runtime:
    engine: Engine = make_engine(f"sqlite:///{db}")
    event.listen(engine, "connect", _throwaway)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    # Nothing is written back: the outbox takes no rows (the runner drops what it is handed).
    sessions.configure(info={outbox.DROP_WRITEBACKS: True})
    # Every channel a journey can name, counting what it is given: the forecast assumes the
    # hospital configures them all, and the patient's contacts decide.
    channels = {name: ConsoleChannel(sink, name=name, medium=medium) for name, medium in
                (("sms", "WRITTEN"), ("email", "EMAILWRIT"))}
    return build_runtime(settings, sessions=sessions, clock=SimulatedClock(now),
                         journeys=journeys, ehr=_StoreEhr(sessions), channels=channels,
                         enqueue=CollectingEnqueuer())


def _rows(rt: Runtime, patients: dict[str, dict[str, Any]]) -> list[PlanRow]:
    rows = []
    zones: dict[str, Any] = {}  # by patient: their record no longer changes
    with rt.sessions() as session:
        query = select(ScheduledStep, Enrollment).join(Enrollment).order_by(
            ScheduledStep.due_at, Enrollment.id, ScheduledStep.id)
        for step, enrollment in session.execute(query).all():
            zone = zones.get(enrollment.patient)
            if zone is None:
                zone = zones[enrollment.patient] = patient_zone(
                    session, enrollment.patient, lambda _p: rt.settings.zone)
            rows.append(_row(rt, step, enrollment, patients, zone))
    rows.sort(key=lambda r: (r.due_utc, r.patient, r.journey))
    return rows


def _row(rt: Runtime, step: ScheduledStep, enrollment: Enrollment,
         patients: dict[str, dict[str, Any]], zone: Any) -> PlanRow:
    journey = rt.journeys.by_name(enrollment.journey)
    spec = journey.step(step.step_id) if journey else None
    why, caregiver = step.reason, False
    channel = step.channel if step.state == StepState.SENT else None
    pending = step.state in (StepState.SCHEDULED, StepState.QUEUED)
    if spec is not None and journey is not None and pending:
        # Beyond the horizon: who it would reach, as the contacts stand now.
        mode = spec.recipient or journey.spec.recipient
        record = patients.get(enrollment.patient)
        found = choose_recipient(mode, record, spec.channel, step.due_at) if record else None
        if record is None:
            why = "patient not in the input: contact unknown"
        elif found is None:
            why = f"would be skipped: no {mode} contact among [{', '.join(spec.channel)}]"
        else:
            channel, caregiver = found.channel, found.to_caregiver
    at = step.sent_at or step.due_at
    return PlanRow(
        patient=enrollment.patient, journey=enrollment.journey, step=step.step_id,
        about=enrollment.anchor_reference, state=str(step.state),
        due_utc=at.isoformat(timespec="minutes"),
        due_local=at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
        channel=channel, to_caregiver=caregiver, why=why,
    )


def _horizon(valid: list[dict[str, Any]], now: datetime) -> datetime:
    """The last change or visit in the export, a week on."""
    moments = [now]
    for resource in valid:
        _, updated = version_of(resource)
        if updated:
            moments.append(updated)
        for when in (resource.get("start"), (resource.get("period") or {}).get("end")):
            if isinstance(when, str):
                try:
                    moments.append(datetime.fromisoformat(when.replace("Z", "+00:00")))
                except ValueError:
                    continue
    return max(m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments) + HORIZON


def _tally(rt: Runtime) -> tuple[dict[str, Counter[str]], int]:
    """Steps per state; messages sent per local day, hour, channel and journey; SMS segments."""
    zone = rt.settings.zone
    counts: dict[str, Counter[str]] = {k: Counter() for k in _COUNTED}
    segments = 0
    with rt.sessions() as session:
        for state, in session.execute(select(ScheduledStep.state)):
            counts["steps"][str(state)] += 1
        sent = session.execute(
            select(DeliveryAttempt.started_at, DeliveryAttempt.channel, DeliveryAttempt.segments,
                   Enrollment.journey)
            .join(ScheduledStep, DeliveryAttempt.step_id == ScheduledStep.id)
            .join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
            .where(DeliveryAttempt.state == "sent"))
        for at, channel, parts, journey in sent:
            local = at.astimezone(zone)
            counts["day"][local.date().isoformat()] += 1
            counts["hour"][f"{local.hour:02d}"] += 1
            counts["channel"][channel] += 1
            counts["journey"][journey] += 1
            segments += parts or 0
    return counts, segments


def _summary(settings: Settings, counts: dict[str, Counter[str]], segments: int
             ) -> dict[str, Any]:
    """Volumes per local day, hour, channel and journey; deferrals; SMS segments and cost."""
    pricing = Pricing(settings.sms_price_per_segment, settings.currency)
    return {
        "steps": dict(sorted(counts["steps"].items())),
        "messages": sum(counts["channel"].values()),
        **{f"by_{k}": dict(sorted(counts[k].items())) for k in ("day", "hour", "channel",
                                                                 "journey")},
        "deferred": {when: dict(sorted(counts[when].items()))
                     for when in ("when planned", "at send time")},
        "segments": segments,
        "cost": {"amount": pricing.cost(segments), "currency": pricing.currency,
                 "price_per_segment": pricing.price_per_segment},
    }


@dataclass(frozen=True)
class _Shard:
    """One store's run over some patients' versions (see outreach.simulate_shards)."""

    rules: Path
    resources: list[dict[str, Any]]
    now: datetime
    until: datetime
    settings: Settings


@dataclass
class _Found:
    """What one shard's run found: its rows in forecast order, its campaign runs (journey, tick,
    matched, enrolled) and its counts; shards add up."""

    rows: list[PlanRow]
    campaigns: list[tuple[str, str, int, int]]
    counts: dict[str, Counter[str]]
    segments: int


def _run_shard(shard: _Shard) -> _Found:
    """The real pipeline over the shard's versions, on its own throw-away store."""
    settings, now = shard.settings, shard.now
    journeys = load_journeys(shard.rules, load_templates(settings).names)
    deferrals: Counter[str] = Counter()
    moved: dict[int, str] = {}  # step → what moved it later when it was (last) planned

    def tally(_step_id: int, outcome: SendOutcome) -> None:
        if outcome.state == StepState.SCHEDULED and "deferred" in (outcome.reason or ""):
            deferrals[(outcome.reason or "").split(":")[0]] += 1

    def planned(result: IngestResult) -> None:
        for journey in result.journeys:
            for step in journey.steps:
                why = step.reason or ""
                if why.startswith("deferred by "):
                    moved[step.id] = why.removeprefix("deferred by ").removesuffix(" when planned")
                else:
                    moved.pop(step.id, None)

    with tempfile.TemporaryDirectory(prefix="outreach-simulate-") as tmp, \
            open(os.devnull, "w", encoding="utf-8") as sink:
        rt = _runtime(settings, journeys, now, Path(tmp) / "simulate.db", sink)
        try:
            runner = InProcess(rt, tally, write_back=False)
            listened = set(journeys.resource_types)
            ordered = list(_ordered(shard.resources, listened))
            ehr = rt.ehr
            assert isinstance(ehr, _StoreEhr)
            for resource in (r for r in ordered if r["resourceType"] not in listened):
                ehr.forget(resource)
                ingest(rt, resource, source="simulate")
            runs = [(r.journey, r.run_key, r.matched, r.enrolled) for r in
                    campaigns.run_due_campaigns(rt, _InputSource(shard.resources))]
            runner.drain()
            for resource in (r for r in ordered if r["resourceType"] in listened):
                _, updated = version_of(resource)
                runner.run_until(max(now, updated) if updated else now)
                ehr.forget(resource)
                planned(ingest(rt, resource, source="simulate"))
                runner.drain()
            runner.run_until(shard.until)
            patients = {f"Patient/{r['id']}": r for r in shard.resources
                        if r["resourceType"] == "Patient" and r.get("id")}
            counts, segments = _tally(rt)
            counts["when planned"] = Counter(moved.values())
            counts["at send time"] = deferrals
            return _Found(_rows(rt, patients), runs, counts, segments)
        finally:
            rt.engine.dispose()


def _merge(found: list[_Found], notes: list[str], settings: Settings) -> Forecast:
    """The shards' findings as one forecast, as one store would have given it: rows that tie on
    (time, patient, journey) are one patient's, so from one shard, in that shard's order."""
    rows = sorted((row for part in found for row in part.rows),
                  key=lambda r: (r.due_utc, r.patient, r.journey))
    runs: dict[tuple[str, str], list[int]] = {}
    for part in found:
        for journey, tick, matched, enrolled in part.campaigns:
            total = runs.setdefault((journey, tick), [0, 0])
            total[0] += matched
            total[1] += enrolled
    notes = notes + [f"campaign {journey} tick {tick}: {matched} matched, {enrolled} enrolled"
                     for (journey, tick), (matched, enrolled) in runs.items()]
    counts: dict[str, Counter[str]] = {k: Counter() for k in _COUNTED}
    for part in found:
        for key, counted in part.counts.items():
            counts[key].update(counted)
    return Forecast(rows, notes, _summary(settings, counts, sum(p.segments for p in found)))


def simulate(
    rules: Path, resources: list[dict[str, Any]], now: datetime, settings: Settings,
    until: datetime | None = None, workers: int = 1,
) -> Forecast:
    """The forecast for these resources: every step and what became of it by the horizon,
    notes (invalid resources, campaign runs) and the volumes. With `workers` > 1 the patients
    are split across that many processes (outreach.simulate_shards) and the forecast is the same;
    a script calling this then needs its `if __name__ == "__main__":` guard, as worker processes
    import the caller's main module."""
    load_journeys(rules, load_templates(settings).names)  # a bad journey fails here, once
    notes: list[str] = []
    valid = []
    for resource in resources:
        try:
            valid.append(validate_resource(resource))
        except InvalidResource as exc:
            ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            notes.append(f"skipped invalid {ref}: {exc}")
    horizon = until or _horizon(valid, now)
    shards = [_Shard(rules, part, now, horizon, settings)
              for part in simulate_shards.partition(valid, workers)]
    return _merge(simulate_shards.run_all(_run_shard, shards), notes, settings)


def as_json(forecast: Forecast) -> str:
    return json.dumps({"rows": [asdict(row) for row in forecast.rows],
                       "summary": forecast.summary}, indent=2, ensure_ascii=False)


def as_table(forecast: Forecast) -> str:
    rows = forecast.rows
    header = ("patient", "journey", "step", "state", "local time", "UTC", "channel", "why")
    cells = [header] + [
        (r.patient, r.journey, r.step, r.state, r.due_local, r.due_utc,
         (r.channel or "-") + (" (caregiver)" if r.to_caregiver else ""), r.why or "")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
             .rstrip() for row in cells]
    summary = forecast.summary
    cost = summary["cost"]
    lines += ["", f"{summary['messages']} messages ("
              + ", ".join(f"{n} {c}" for c, n in summary["by_channel"].items())
              + f"); SMS segments {summary['segments']} (≈ {cost['amount']:.2f} "
              f"{cost['currency']}); steps: "
              + ", ".join(f"{n} {s}" for s, n in summary["steps"].items())]
    for when, found in summary["deferred"].items():
        if found:
            lines.append(f"deferred {when}: "
                         + ", ".join(f"{n} by {why}" for why, n in found.items()))
    for name in ("journey", "day", "hour"):
        if summary[f"by_{name}"]:
            lines.append(f"per {name}: " + ", ".join(
                f"{key} {n}" for key, n in summary[f"by_{name}"].items()))
    return "\n".join(lines)
