"""Ingest: a resource version from any source becomes at most one processed ResourceChange.

A notification is a hint (DESIGN.md): `ingest_notified` checks it against the EHR before acting,
so a forged or stale payload never reaches the journeys; `ingest` trusts what it is given (the
poller and the send-time check read it from the EHR themselves)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.changes import make_change, make_deletion, version_of
from connector.errors import FhirNotFound, InvalidResource
from connector.resources import validate_resource
from outreach.enrollment import JourneyOutcome, apply_journeys, due_now
from outreach.runtime import Runtime
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


@dataclass(frozen=True)
class Ignored:
    """A notification we did not act on, and why (the EHR does not have that resource, ...)."""

    reference: str
    reason: str
    outcome: Literal["ignored"] = "ignored"


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


def _lock(session: Session, key: tuple[str, str], now: datetime) -> tuple[ResourceVersion, bool]:
    """The resource's row, locked; (row, True) when this is its first sight and the row is a
    fresh placeholder. Two first sights at once (a redelivery racing the original) both find no
    row to lock: the second insert waits on the unique key until the first commits, fails, and
    then locks the row the first one wrote, so the two are processed one after the other."""
    row = session.get(ResourceVersion, key, with_for_update=True)
    if row is not None:
        return row, False
    row = ResourceVersion(resource_type=key[0], resource_id=key[1], version_id="",
                          last_updated=None, deleted=False, resource=None, updated_at=now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.get(ResourceVersion, key, with_for_update=True, populate_existing=True)
        assert existing is not None, "the unique key said it exists"
        return existing, False
    return row, True


def _store_version(
    session: Session, known: ResourceVersion, change: ResourceChange, now: datetime
) -> None:
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
    @property
    def key(self) -> tuple[str, str]: ...

    def change(self, previous: dict[str, Any] | None, now: datetime) -> ResourceChange: ...


def _process(rt: Runtime, build: _VersionSource) -> IngestResult:
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        row, fresh = _lock(session, build.key, now)
        known = None if fresh else row
        previous = known.resource if known is not None and not known.deleted else None
        change = build.change(previous, now)
        gone_again = change.current is None and known is not None and known.deleted
        if gone_again or _already_seen(session, change):
            if fresh:
                session.delete(row)
            return IngestResult("duplicate", change)
        if known is not None and _is_older(change, known):
            _record(session, change, "stale", now)
            return IngestResult("stale", change)
        meta_only = change.previous is not None and change.current is not None and (
            not change.changes)
        if not _record(session, change, "meta-only" if meta_only else "processed", now):
            if fresh:
                session.delete(row)
            return IngestResult("duplicate", change)
        _store_version(session, row, change, now)
        if meta_only:  # nothing a journey could react to; the stored version still moves on
            return IngestResult("unchanged", change)
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


def _recorded(rt: Runtime, resource_type: str, resource_id: str, version_id: str) -> bool:
    with rt.sessions() as session:
        return session.scalar(select(ResourceChangeRecord.id).where(
            ResourceChangeRecord.resource_type == resource_type,
            ResourceChangeRecord.resource_id == resource_id,
            ResourceChangeRecord.version_id == version_id,
        ).limit(1)) is not None


def _known_deleted(rt: Runtime, resource_type: str, resource_id: str) -> bool:
    with rt.sessions() as session:
        known = session.get(ResourceVersion, (resource_type, resource_id))
        return known is not None and known.deleted


def _claims_newer(payload: dict[str, Any], ehr: dict[str, Any]) -> bool:
    """The payload says it is a version the EHR does not have and newer than the EHR's current:
    nothing the EHR ever sent looks like that, so it is forged (or from another server)."""
    (p_vid, p_updated), (e_vid, e_updated) = version_of(payload), version_of(ehr)
    if p_vid is not None and p_vid == e_vid:
        return False
    return p_updated is None or e_updated is None or p_updated > e_updated


def _from_ehr(
    rt: Runtime, resource_type: str, resource_id: str, payload: dict[str, Any] | None,
    source: str,
) -> IngestResult | Ignored:
    assert rt.fhir is not None
    reference = f"{resource_type}/{resource_id}"
    try:
        current = validate_resource(rt.fhir.read(resource_type, resource_id), resource_type)
    except FhirNotFound:
        log.warning("notification for %s, which the EHR does not have: ignored", reference)
        return Ignored(reference, "the EHR does not have this resource")
    except InvalidResource as exc:
        log.warning("the EHR's %s is not valid R4, ignored: %s", reference, exc)
        return Ignored(reference, "the EHR's copy is not valid R4")
    if payload is not None and _claims_newer(payload, current):
        log.warning("notification for %s carries a version the EHR does not have: ignored",
                    reference)
        return Ignored(reference, "the payload's version is not the EHR's")
    # The EHR's copy is what we act on: the same version as the payload, or a newer one when the
    # payload was stale (a retried delivery overtaken by a later change).
    return ingest(rt, current, source)


def ingest_notified(
    rt: Runtime, resource_type: str, resource_id: str, payload: dict[str, Any] | None,
    source: str,
) -> IngestResult | Ignored:
    """A notification about one resource, with its (validated) payload or without one.

    A version we already recorded costs one indexed lookup and no EHR call (redeliveries are the
    common fault). Otherwise, with `OUTREACH_VERIFY_NOTIFICATIONS` (the default) the resource is
    read from the EHR and only the EHR's copy is processed; without it the payload is trusted,
    and the EHR is still read when the payload is missing or older than what we have."""
    if payload is not None:
        version_id, _ = version_of(payload)
        if version_id is not None and _recorded(rt, resource_type, resource_id, version_id):
            return IngestResult("duplicate", make_change(payload, None, source))
        if rt.fhir is None or not rt.settings.verify_notifications:
            result = ingest(rt, payload, source)
            if result.outcome != "stale" or rt.fhir is None:
                return result
    if rt.fhir is None:
        return Ignored(f"{resource_type}/{resource_id}", "no payload and no EHR to read from")
    return _from_ehr(rt, resource_type, resource_id, payload, source)


def ingest_deleted(
    rt: Runtime, resource_type: str, resource_id: str, source: str
) -> IngestResult | Ignored:
    """A delete notification: acted on only once the EHR confirms the resource is gone."""
    if _known_deleted(rt, resource_type, resource_id):
        return ingest_deletion(rt, resource_type, resource_id, source)  # a duplicate, cheaply
    if rt.fhir is not None and rt.settings.verify_notifications:
        try:
            current = rt.fhir.read(resource_type, resource_id)
        except FhirNotFound:
            pass
        else:
            log.warning("delete notification for %s/%s, which the EHR still has: re-read",
                        resource_type, resource_id)
            return ingest(rt, validate_resource(current, resource_type), source)
    return ingest_deletion(rt, resource_type, resource_id, source)
