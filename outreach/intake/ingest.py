"""Ingest: a resource version from any source becomes at most one processed ResourceChange.

`ingest` trusts what it is given (the poller, the send-time check and a reply action read it
from the EHR themselves); a notification goes through `intake.notifications` first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, cast

from sqlalchemy import Executable, Table, bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector.changes import make_change, make_deletion
from outreach.access import waitlist
from outreach.core.ports import Runtime
from outreach.planning.enrollment import apply_journeys
from outreach.planning.outcomes import JourneyOutcome, due_now, queue_for_outcomes
from outreach.store.db import transaction
from outreach.store.models import ResourceChangeRecord, ResourceVersion
from rules import ResourceChange

log = logging.getLogger(__name__)

Outcome = Literal["processed", "duplicate", "stale", "unchanged"]


@dataclass
class IngestResult:
    outcome: Outcome
    change: ResourceChange
    journeys: list[JourneyOutcome] = field(default_factory=list)


# Rows are read and written with Core statements built once per dialect: the hot path is a
# handful of single-row statements, and the ORM unit of work around each cost as much as the
# round trip itself. Both constructs (ON CONFLICT ... RETURNING) exist on Postgres and SQLite.
_VERSIONS = cast(Table, ResourceVersion.__table__)
_CHANGES = cast(Table, ResourceChangeRecord.__table__)
_VERSION_KEY = ("resource_type", "resource_id")
_CHANGE_KEY = ("resource_type", "resource_id", "version_id")


@dataclass(frozen=True, slots=True)
class _Known:
    """The resource's resource_versions row as this transaction locked (or wrote) it."""

    version_id: str
    last_updated: datetime | None
    deleted: bool
    resource: dict[str, Any] | None


class _Statements:
    """The ingest statements for one SQL dialect (postgresql or sqlite)."""

    def __init__(self, dialect: str) -> None:
        insert: Callable[[Table], Any] = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect]
        v, c = _VERSIONS.c, _CHANGES.c
        columns = ["resource_type", "resource_id", "version_id", "last_updated", "deleted",
                   "resource", "updated_at"]
        recorded = exists().where(c.resource_type == bindparam("resource_type"),
                                  c.resource_id == bindparam("resource_id"),
                                  c.version_id == bindparam("version_id"))
        row = select(*(bindparam(name, type_=v[name].type) for name in columns)).where(~recorded)
        # One statement claims the resource: a first sight inserts this version as the stored
        # one; otherwise the no-op DO UPDATE takes the existing row's lock (waiting for a racing
        # first sight to commit, so concurrent first sights are serialised) and returns it. A
        # version already recorded (the common redelivery) inserts and locks nothing and returns
        # no row: a committed record is never removed, so that answer cannot be wrong.
        self.claim: Executable = (
            insert(_VERSIONS).from_select(columns, row)
            .on_conflict_do_update(index_elements=list(_VERSION_KEY),
                                   set_={"updated_at": v.updated_at})
            .returning(v.version_id, v.last_updated, v.deleted, v.resource)
        )
        # Under the row lock, the unique key is the authoritative "already seen" check.
        self.record: Executable = (
            insert(_CHANGES).on_conflict_do_nothing(index_elements=list(_CHANGE_KEY))
            .returning(c.id)
        )
        self.store: Executable = (
            update(_VERSIONS)
            .where(v.resource_type == bindparam("key_type"), v.resource_id == bindparam("key_id"))
            .values(version_id=bindparam("version_id"), last_updated=bindparam("last_updated"),
                    deleted=bindparam("deleted"), resource=bindparam("resource"),
                    updated_at=bindparam("updated_at"))
        )


_STATEMENTS: dict[str, _Statements] = {}


def _statements(session: Session) -> _Statements:
    dialect = session.get_bind().dialect.name
    found = _STATEMENTS.get(dialect)
    if found is None:
        found = _STATEMENTS[dialect] = _Statements(dialect)
    return found


def _stored_values(change: ResourceChange, known: _Known | None, now: datetime) -> dict[str, Any]:
    # A deletion keeps the last resource we saw: a later re-creation is diffed against it.
    resource = change.current if change.current is not None else (
        known.resource if known is not None else None)
    return {"version_id": change.version_id, "last_updated": change.last_updated,
            "deleted": change.current is None, "resource": resource, "updated_at": now}


def _claim(session: Session, first: ResourceChange, now: datetime) -> _Known | None:
    """Lock the resource's row, inserting `first` (the change as a first sight) when there is
    none; None when `first`'s version is already recorded."""
    params = {"resource_type": first.resource_type, "resource_id": first.resource_id,
              **_stored_values(first, None, now)}
    found = session.connection().execute(_statements(session).claim, params).first()
    if found is None:
        return None
    return _Known(found.version_id, found.last_updated, found.deleted, found.resource)


def _record(session: Session, change: ResourceChange, outcome: str, now: datetime) -> bool:
    """Insert the change row; False if this version was already recorded (the unique key)."""
    found = session.connection().execute(_statements(session).record, {
        "resource_type": change.resource_type, "resource_id": change.resource_id,
        "version_id": change.version_id, "kind": change.kind.value, "source": change.source,
        "outcome": outcome, "last_updated": change.last_updated, "received_at": now,
    }).first()
    return found is not None


def _store_version(
    session: Session, known: _Known, change: ResourceChange, now: datetime
) -> None:
    session.connection().execute(_statements(session).store, {
        "key_type": change.resource_type, "key_id": change.resource_id,
        **_stored_values(change, known, now)})


def _is_older(change: ResourceChange, known: _Known) -> bool:
    # versionIds are opaque (UUIDs on some servers): order by meta.lastUpdated.
    return (
        change.last_updated is not None
        and known.last_updated is not None
        and change.last_updated < known.last_updated
    )


class _VersionSource(Protocol):
    @property
    def key(self) -> tuple[str, str]: ...

    def change(self, previous: dict[str, Any] | None, now: datetime) -> ResourceChange: ...


class _Undo(Exception):
    """Leave the transaction without keeping anything (a duplicate found after writing)."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__(result.outcome)
        self.result = result


def _process(rt: Runtime, build: _VersionSource) -> IngestResult:
    now = rt.clock.now()
    # Built before the lock as if this were the resource's first sight, which it often is; a
    # known resource gets its change rebuilt against the stored version once that is locked.
    first = build.change(None, now)
    try:
        with transaction(rt.sessions) as session:
            known = _claim(session, first, now)
            if known is None:
                return IngestResult("duplicate", first)
            # The row we got back is the one we just wrote, or a stored row holding this very
            # version (recorded by a transaction that committed after our check): then the
            # record insert below finds the version and the whole transaction is undone.
            fresh = known.version_id == first.version_id
            change = first if fresh else build.change(
                known.resource if not known.deleted else None, now)
            if change.current is None and known.deleted and not fresh:
                raise _Undo(IngestResult("duplicate", change))  # deleted again
            if not fresh and _is_older(change, known):
                if not _record(session, change, "stale", now):
                    raise _Undo(IngestResult("duplicate", change))
                return IngestResult("stale", change)
            meta_only = change.previous is not None and change.current is not None and (
                not change.changes)
            if not _record(session, change, "meta-only" if meta_only else "processed", now):
                raise _Undo(IngestResult("duplicate", change))
            if not fresh:
                _store_version(session, known, change, now)
            if meta_only:  # nothing a journey could react to; the stored version still moves on
                return IngestResult("unchanged", change)
            # Enrollments for change-triggered journeys are only ever made here, in the same
            # transaction that first stores the resource's row: a first sight has none to find.
            outcomes = apply_journeys(session, rt.journeys, change, now,
                                      lambda _p: rt.settings.zone, may_be_enrolled=not fresh,
                                      policy=rt.settings.cap_policy)
            waitlist.start(session, rt.journeys, outcomes, change, now)
            session.flush()
            ready = due_now(outcomes)
            requests = queue_for_outcomes(session, rt.settings.identifier_system, rt.journeys,
                                          outcomes, now)
    except _Undo as undone:
        return undone.result
    rt.enqueue.send_steps(ready)  # first: a booking confirmation should not queue behind
    rt.enqueue.write_back(requests)  # the requests that make planned outreach visible
    log.info("ingested %s version %s from %s: %s", change.reference, change.version_id,
             change.source, ", ".join(f"{o.journey}={o.action}" for o in outcomes) or "no journey")
    return IngestResult("processed", change, outcomes)


@dataclass
class _Version:
    resource: dict[str, Any]
    source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource["resourceType"], self.resource["id"])

    def change(self, previous: dict[str, Any] | None, _now: datetime) -> ResourceChange:
        return make_change(self.resource, previous, self.source)


@dataclass
class _Deletion:
    resource_type: str
    resource_id: str
    source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource_type, self.resource_id)

    def change(self, previous: dict[str, Any] | None, now: datetime) -> ResourceChange:
        return make_deletion(self.resource_type, self.resource_id, previous, now, self.source)


def ingest(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult:
    """Process one (already validated) resource version; duplicates and older versions are
    recorded and ignored, so any source may deliver the same version any number of times."""
    return _process(rt, _Version(resource, source))


def ingest_deletion(rt: Runtime, resource_type: str, resource_id: str, source: str) -> IngestResult:
    return _process(rt, _Deletion(resource_type, resource_id, source))
