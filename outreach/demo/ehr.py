"""The demo's EHR: resources are read from our own store (the versions the demo replayed), plus
the versions this EHR made itself when we updated its resources (a Slot taken, an Appointment
moved or confirmed); write-back lands in NDJSON files, one per resource type."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connector.changes import version_of
from connector.errors import FhirNotFound, FhirPreconditionFailed
from connector.polling import fhir_instant
from outreach.core.clock import Clock
from outreach.demo.search import search
from outreach.store.ingested import IngestedEhr
from outreach.store.models import ResourceVersion

Key = tuple[str, str]


def _identifiers(resource: dict[str, Any]) -> set[str]:
    found = resource.get("identifier", [])
    found = [found] if isinstance(found, dict) else found  # QuestionnaireResponse has one
    return {f"{i.get('system')}|{i.get('value')}" for i in found}


def _newer(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, Any] | None:
    """The later of two versions of one resource, by meta.lastUpdated (versionIds are opaque)."""
    if first is None or second is None:
        return first or second
    when = [version_of(r)[1] or datetime.min.replace(tzinfo=UTC) for r in (first, second)]
    return second if when[1] >= when[0] else first


def _next_version(version: str | None) -> str:
    return str(int(version) + 1) if version and version.isdigit() else uuid.uuid4().hex


def _etag(if_match: str) -> str:
    return if_match.removeprefix("W/").strip('"')


class DemoEhr(IngestedEhr):
    """Reads give the newest version of a resource: the one the demo ingested, or a newer one this
    EHR made when we updated it. Updates of the EHR's own resources behave as on a FHIR server
    (If-Match checked against the current version, 412 when stale; meta.versionId bumped) and
    searches serve what the scheduler and the waitlist ask (outreach.demo.search). Write-back of
    our resources behaves like the EHR's (conditional create, update by id) and keeps the newest
    version of each in `{folder}/{ResourceType}.ndjson`, as a bulk export would, as do the
    updates. No CapabilityStatement: write-back is then assumed possible."""

    def __init__(self, sessions: sessionmaker[Session], folder: Path, clock: Clock) -> None:
        super().__init__(sessions)
        self.folder, self._clock = folder, clock
        folder.mkdir(parents=True, exist_ok=True)
        self._by_identifier: dict[str, dict[str, Any]] = {}
        self._by_type: dict[str, dict[str, dict[str, Any]]] = {}
        self._made: dict[Key, dict[str, Any]] = {}  # versions made here by our updates

    def path(self, resource_type: str) -> Path:
        return self.folder / f"{resource_type}.ndjson"

    def _write(self, resource: dict[str, Any]) -> dict[str, Any]:
        rtype = resource["resourceType"]
        stored = self._by_type.setdefault(rtype, {})
        stored[resource["id"]] = resource
        for identifier in _identifiers(resource):
            self._by_identifier[identifier] = resource
        lines = (json.dumps(r, ensure_ascii=False) for r in stored.values())
        self.path(rtype).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return resource

    def _current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        try:
            ingested: dict[str, Any] | None = super().read(resource_type, resource_id)
        except FhirNotFound:
            ingested = None
        return _newer(ingested, self._made.get((resource_type, resource_id)))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        found = self._current(resource_type, resource_id)
        if found is None:
            raise FhirNotFound(f"{resource_type}/{resource_id} not found", status=404)
        return found

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        existing = self._by_identifier.get((if_none_exist or "").removeprefix("identifier="))
        if existing is not None:
            return existing, False
        return self._write({**resource, "id": str(uuid.uuid4())}), True

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        current = self._current(resource["resourceType"], resource["id"])
        if current is None:  # not the EHR's: a write-back of ours
            return self._write(resource)
        version, updated = version_of(current)
        if if_match is not None and _etag(if_match) != version:
            raise FhirPreconditionFailed(
                f"{resource['resourceType']}/{resource['id']} is at version {version}, not "
                f"{_etag(if_match)[:64]}", status=412)
        # Later than the version it replaces, whatever the clock says: reads order by it.
        now = self._clock.now()
        stamp = max(now, updated + timedelta(milliseconds=1)) if updated else now
        made = {**resource, "meta": {**(resource.get("meta") or {}),
                                     "versionId": _next_version(version),
                                     "lastUpdated": fhir_instant(stamp)}}
        self._made[(resource["resourceType"], resource["id"])] = made
        return self._write(made)

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """A resource of ours by its identifier (write-back), or the EHR's resources."""
        params = params or {}
        if "identifier" in params:
            found = self._by_identifier.get(str(params["identifier"]))
            if found is not None and found["resourceType"] == resource_type:
                yield found
            return
        yield from search(resource_type, self._all(resource_type), params)

    def _all(self, resource_type: str) -> list[dict[str, Any]]:
        with self._sessions() as session:
            rows = session.scalars(select(ResourceVersion.resource).where(
                ResourceVersion.resource_type == resource_type,
                ResourceVersion.deleted.is_(False))).all()
        newest = {str(r["id"]): r for r in rows if r is not None}
        for (rtype, rid), made in self._made.items():
            if rtype == resource_type:
                newest[rid] = _newer(newest.get(rid), made) or made
        return list(newest.values())

    def written(self) -> dict[str, int]:
        return {rtype: len(items) for rtype, items in sorted(self._by_type.items())}
