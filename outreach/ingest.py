"""Ingest: a resource version from any source becomes at most one processed ResourceChange."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.changes import make_change, make_deletion
from outreach.enrollment import JourneyOutcome, apply_journeys, due_now
from outreach.runtime import Runtime
from outreach.store.db import transaction
from outreach.store.models import ResourceChangeRecord, ResourceVersion
from rules import ResourceChange

log = logging.getLogger(__name__)

Outcome = Literal["processed", "duplicate", "stale"]


@dataclass
class IngestResult:
    outcome: Outcome
    change: ResourceChange
    journeys: list[JourneyOutcome] = field(default_factory=list)


def _record(session: Session, change: ResourceChange, outcome: str, now: datetime) -> bool:
    """Insert the change row; False if this version was already recorded (the unique key)."""
    try:
        with session.begin_nested():
            session.add(ResourceChangeRecord(
                resource_type=change.resource_type, resource_id=change.resource_id,
                version_id=change.version_id, kind=change.kind.value, source=change.source,
                outcome=outcome, last_updated=change.last_updated, received_at=now,
            ))
    except IntegrityError:
        return False
    return True


def _is_older(change: ResourceChange, known: ResourceVersion) -> bool:
    # versionIds are opaque (UUIDs on some servers): order by meta.lastUpdated.
    return (
        change.last_updated is not None
        and known.last_updated is not None
        and change.last_updated < known.last_updated
    )


def _store_version(
    session: Session, known: ResourceVersion | None, change: ResourceChange, now: datetime
) -> None:
    if known is None:
        known = ResourceVersion(resource_type=change.resource_type, resource_id=change.resource_id)
        session.add(known)
    known.version_id, known.last_updated = change.version_id, change.last_updated
    known.deleted = change.current is None
    known.resource = change.current if change.current is not None else known.resource
    known.updated_at = now


def _already_seen(session: Session, change: ResourceChange) -> bool:
    query = select(ResourceChangeRecord.id).where(
        ResourceChangeRecord.resource_type == change.resource_type,
        ResourceChangeRecord.resource_id == change.resource_id,
        ResourceChangeRecord.version_id == change.version_id,
    )
    return session.scalar(query) is not None


class _VersionSource(Protocol):
    def known(self, session: Session) -> ResourceVersion | None: ...

    def change(self, previous: dict[str, Any] | None, now: datetime) -> ResourceChange: ...


def _process(rt: Runtime, build: _VersionSource) -> IngestResult:
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        known = build.known(session)
        previous = known.resource if known is not None and not known.deleted else None
        change = build.change(previous, now)
        gone_again = change.current is None and known is not None and known.deleted
        if gone_again or _already_seen(session, change):
            return IngestResult("duplicate", change)
        if known is not None and _is_older(change, known):
            _record(session, change, "stale", now)
            return IngestResult("stale", change)
        if not _record(session, change, "processed", now):
            return IngestResult("duplicate", change)
        _store_version(session, known, change, now)
        outcomes = apply_journeys(session, rt.journeys, change, now, lambda _p: rt.settings.zone)
        session.flush()
        ready = [step.id for step in due_now(outcomes)]
    rt.enqueue.send_steps(ready)
    log.info("ingested %s version %s from %s: %s", change.reference, change.version_id,
             change.source, ", ".join(f"{o.journey}={o.action}" for o in outcomes) or "no journey")
    return IngestResult("processed", change, outcomes)


@dataclass
class _Version:
    resource: dict[str, Any]
    source: str

    def known(self, session: Session) -> ResourceVersion | None:
        key = (self.resource["resourceType"], self.resource["id"])
        return session.get(ResourceVersion, key, with_for_update=True)

    def change(self, previous: dict[str, Any] | None, _now: datetime) -> ResourceChange:
        return make_change(self.resource, previous, self.source)


@dataclass
class _Deletion:
    resource_type: str
    resource_id: str
    source: str

    def known(self, session: Session) -> ResourceVersion | None:
        return session.get(ResourceVersion, (self.resource_type, self.resource_id),
                           with_for_update=True)

    def change(self, previous: dict[str, Any] | None, now: datetime) -> ResourceChange:
        return make_deletion(self.resource_type, self.resource_id, previous, now, self.source)


def ingest(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult:
    """Process one (already validated) resource version; duplicates and older versions are
    recorded and ignored, so any source may deliver the same version any number of times."""
    return _process(rt, _Version(resource, source))


def ingest_deletion(rt: Runtime, resource_type: str, resource_id: str, source: str) -> IngestResult:
    return _process(rt, _Deletion(resource_type, resource_id, source))
