"""Batch ingest: many resource versions in one transaction (group commit), set-based where
`intake.ingest` spends a statement per version; the same outcomes and rows as one at a time.

A batch is cut into rounds in which every resource, and every patient, appears once: a round
claims all its resources in one statement, records all its changes in one, and plans all its
first sights together (`planning.first_sights`); a later version of the same resource, or another
change for the same patient, waits for the next round of the same transaction and so sees the
earlier one exactly as it would have one at a time. If anything in the batch fails, the
transaction is rolled back and every version is ingested on its own, so one bad version fails
alone and the others are still stored."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.orm import Session

from connector.changes import make_change
from outreach.access import waitlist
from outreach.core.ports import Runtime
from outreach.intake.ingest import (
    IngestResult,
    _is_older,
    _Known,
    _statements,
    _stored_values,
    ingest,
)
from outreach.planning.enrollment import Planning, apply_journeys
from outreach.planning.first_sights import as_json, plan_first_sights
from outreach.planning.outcomes import JourneyOutcome, due_now, queue_for_outcomes
from outreach.store.db import transaction
from outreach.store.types import JsonDocument, UTCDateTime
from rules import ResourceChange
from rules.recipients import patient_reference

log = logging.getLogger(__name__)

Item = tuple[dict[str, Any], str]  # a validated resource version and its source
Key = tuple[str, str]

# One statement claims a whole round: `_Statements.claim` for many rows (see there). Rows are
# locked in key order, so two batches sharing resources wait for each other instead of
# deadlocking (a deadlock would still only send both back to one at a time).
_CLAIM = text("""
INSERT INTO resource_versions AS v
    (resource_type, resource_id, version_id, last_updated, deleted, resource, updated_at)
SELECT n.resource_type, n.resource_id, n.version_id, n.last_updated, false, n.resource, :now
FROM json_to_recordset(CAST(:rows AS json))
     AS n(resource_type varchar, resource_id varchar, version_id varchar,
          last_updated timestamptz, resource jsonb)
WHERE NOT EXISTS (SELECT 1 FROM resource_changes c WHERE c.resource_type = n.resource_type
                  AND c.resource_id = n.resource_id AND c.version_id = n.version_id)
ORDER BY n.resource_type, n.resource_id
ON CONFLICT (resource_type, resource_id) DO UPDATE SET updated_at = v.updated_at
RETURNING v.resource_type, v.resource_id, v.version_id, v.last_updated, v.deleted, v.resource
""").columns(last_updated=UTCDateTime(), resource=JsonDocument)
# A round's change rows in one statement of constant text (a multi-row VALUES statement is new
# text, parsed again, for every batch size), inserted in the batch's order.
_RECORD = text("""
INSERT INTO resource_changes
    (resource_type, resource_id, version_id, kind, source, outcome, last_updated, received_at)
SELECT n.resource_type, n.resource_id, n.version_id, n.kind, n.source, n.outcome,
       n.last_updated, :now
FROM ROWS FROM (json_to_recordset(CAST(:rows AS json))
     AS (resource_type varchar, resource_id varchar, version_id varchar, kind varchar,
         source varchar, outcome varchar, last_updated timestamptz)) WITH ORDINALITY
     AS n(resource_type, resource_id, version_id, kind, source, outcome, last_updated,
          ordinality)
ORDER BY n.ordinality
ON CONFLICT (resource_type, resource_id, version_id) DO NOTHING
RETURNING resource_type, resource_id""")


@dataclass
class _Batch:
    """What the batch's transaction produced, for after it commits."""

    results: list[IngestResult | None]
    ready: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)


def _rounds(changes: list[ResourceChange]) -> list[list[int]]:
    """Item indexes by round: a resource or patient seen in round k is next seen in k+1 or
    later, so its versions keep their order."""
    last: dict[object, int] = {}
    rounds: list[list[int]] = []
    for index, change in enumerate(changes):
        marks: list[object] = [(change.resource_type, change.resource_id)]
        if (patient := patient_reference(change.current or {})) is not None:
            marks.append(patient)
        at = max((last[m] + 1 for m in marks if m in last), default=0)
        for mark in marks:
            last[mark] = at
        if at == len(rounds):
            rounds.append([])
        rounds[at].append(index)
    return rounds


def _claim(session: Session, firsts: list[ResourceChange], now: datetime) -> dict[Key, _Known]:
    rows = session.connection().execute(_CLAIM, {"now": now, "rows": as_json([
        {"resource_type": c.resource_type, "resource_id": c.resource_id,
         "version_id": c.version_id, "last_updated": c.last_updated, "resource": c.current}
        for c in firsts])})
    return {(r.resource_type, r.resource_id): _Known(r.version_id, r.last_updated, r.deleted,
                                                     r.resource) for r in rows}


def _record(session: Session, changes: list[tuple[ResourceChange, str]], now: datetime) -> set[Key]:
    """Insert the change rows; the keys whose version was not recorded before."""
    if not changes:
        return set()
    rows = session.connection().execute(_RECORD, {"now": now, "rows": as_json([{
        "resource_type": c.resource_type, "resource_id": c.resource_id,
        "version_id": c.version_id, "kind": c.kind.value, "source": c.source, "outcome": outcome,
        "last_updated": c.last_updated} for c, outcome in changes])})
    return {(r.resource_type, r.resource_id) for r in rows}


def _round(
    rt: Runtime, session: Session, batch: _Batch, indexes: list[int], items: Sequence[Item],
    firsts: list[ResourceChange], now: datetime,
) -> None:
    known = _claim(session, [firsts[i] for i in indexes], now)
    # index -> (change, fresh, outcome to record)
    decided: dict[int, tuple[ResourceChange, bool, str]] = {}
    for i in indexes:
        first = firsts[i]
        found = known.get((first.resource_type, first.resource_id))
        if found is None:
            batch.results[i] = IngestResult("duplicate", first)
            continue
        fresh = found.version_id == first.version_id
        change = first if fresh else make_change(
            items[i][0], found.resource if not found.deleted else None, items[i][1])
        if not fresh and _is_older(change, found):
            decided[i] = (change, fresh, "stale")
            continue
        meta_only = change.previous is not None and change.current is not None and (
            not change.changes)
        decided[i] = (change, fresh, "meta-only" if meta_only else "processed")
    recorded = _record(session, [(c, outcome) for c, _, outcome in decided.values()], now)
    stores, first_sights, updates = [], [], []
    for i, (change, fresh, outcome) in decided.items():
        if (change.resource_type, change.resource_id) not in recorded:
            batch.results[i] = IngestResult("duplicate", change)  # recorded meanwhile
            continue
        if outcome == "stale":
            batch.results[i] = IngestResult("stale", change)
            continue
        if not fresh:
            stores.append({"key_type": change.resource_type, "key_id": change.resource_id,
                           **_stored_values(change, known[change.resource_type,
                                                          change.resource_id], now)})
        if outcome == "meta-only":
            batch.results[i] = IngestResult("unchanged", change)
        elif fresh:
            first_sights.append(i)
        else:
            updates.append(i)
    if stores:
        session.connection().execute(_statements(session).store, stores)
    _plan(rt, session, batch, [(i, decided[i][0]) for i in first_sights],
          [(i, decided[i][0]) for i in updates], now)


def _plan(
    rt: Runtime, session: Session, batch: _Batch, first_sights: list[tuple[int, ResourceChange]],
    updates: list[tuple[int, ResourceChange]], now: datetime,
) -> None:
    planning = Planning(lambda _p: rt.settings.zone, rt.journeys, rt.settings.cap_policy)
    planned: list[tuple[int, ResourceChange, list[JourneyOutcome]]] = []
    if first_sights:
        each, requests = plan_first_sights(session, [c for _, c in first_sights], now, planning,
                                           rt.settings.identifier_system)
        planned += [(i, c, o) for (i, c), o in zip(first_sights, each, strict=True)]
        batch.requests += requests
    for i, change in updates:  # a known resource: its enrollments are looked up and locked
        found = apply_journeys(session, rt.journeys, change, now, planning.zone_for,
                               policy=rt.settings.cap_policy)
        batch.requests += queue_for_outcomes(session, rt.settings.identifier_system,
                                             rt.journeys, found, now)
        planned.append((i, change, found))
    for i, change, outcomes in planned:
        waitlist.start(session, rt.journeys, outcomes, change, now)
        batch.ready += due_now(outcomes)
        batch.results[i] = IngestResult("processed", change, outcomes)
    session.flush()


def _ingest_batch(rt: Runtime, items: Sequence[Item]) -> _Batch:
    now = rt.clock.now()
    firsts = [make_change(resource, None, source) for resource, source in items]
    batch = _Batch([None] * len(items))
    with transaction(rt.sessions) as session:
        for indexes in _rounds(firsts):
            _round(rt, session, batch, indexes, items, firsts, now)
    return batch


def _alone(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult | Exception:
    try:
        return ingest(rt, resource, source)
    except Exception as exc:  # handed to this version's caller, not the others'
        return exc


def ingest_many(rt: Runtime, items: Sequence[Item]) -> list[IngestResult | Exception]:
    """Ingest (already validated) versions, in order, in one transaction; each gets the result
    `ingest` would have given it, or the exception it alone raised (the others still stored)."""
    # A single version takes the batch's statements too: a third of `ingest`'s CPU (group
    # commit hands a lone caller's version here).
    if not items or rt.engine.dialect.name != "postgresql":
        return [_alone(rt, resource, source) for resource, source in items]
    try:
        batch = _ingest_batch(rt, items)
    except Exception as exc:  # find the bad version: one at a time
        log.warning("a batch of %s versions failed (%s): ingesting them one at a time",
                    len(items), type(exc).__name__)
        return [_alone(rt, resource, source) for resource, source in items]
    rt.enqueue.send_steps(batch.ready)  # first: a booking confirmation should not queue behind
    rt.enqueue.write_back(batch.requests)  # the requests that make planned outreach visible
    results = [cast(IngestResult, r) for r in batch.results]
    for result in results:
        if result.outcome == "processed":
            log.info("ingested %s version %s from %s: %s", result.change.reference,
                     result.change.version_id, result.change.source,
                     ", ".join(f"{o.journey}={o.action}" for o in result.journeys)
                     or "no journey")
    return list(results)
