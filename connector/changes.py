"""Turn a resource version (and the last one we processed) into a classified ResourceChange."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules.changes import ChangeKind, ResourceChange, parse_instant

# Elements a server rewrites without the resource changing for anyone (a new versionId, a
# security label, a regenerated narrative): a version that differs only here is meta-only.
IGNORED_ELEMENTS = frozenset({"meta", "text"})
# Elements compared as instants, so "10:00Z" and "11:00+01:00" are the same time.
INSTANT_ELEMENTS = frozenset({"start", "end"})
RESCHEDULE_ELEMENTS = frozenset({"start", "end"})


@dataclass(frozen=True, slots=True)
class Classification:
    changes: frozenset[str]
    status_from: str | None
    status_to: str | None

    @property
    def meta_only(self) -> bool:
        return not self.changes


def version_of(resource: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """(meta.versionId, meta.lastUpdated); versionId is opaque (Medplum uses UUIDs)."""
    meta = resource.get("meta") or {}
    updated = meta.get("lastUpdated")
    return meta.get("versionId"), parse_instant(updated) if isinstance(updated, str) else None


def _same(name: str, before: Any, after: Any) -> bool:
    if name in INSTANT_ELEMENTS and isinstance(before, str) and isinstance(after, str):
        try:
            return parse_instant(before) == parse_instant(after)
        except ValueError:
            return before == after
    return bool(before == after)


def _status(resource: dict[str, Any] | None) -> str | None:
    value = (resource or {}).get("status")
    return value if isinstance(value, str) else None


def classify(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> Classification:
    """What changed between the last version we processed and this one."""
    before, after = _status(previous), _status(current)
    if previous is None:
        return Classification(frozenset({"created"}), None, after)
    if current is None:
        return Classification(frozenset({"deleted"}), before, None)
    names = (previous.keys() | current.keys()) - IGNORED_ELEMENTS
    changed = {n for n in names if not _same(n, previous.get(n), current.get(n))}
    if changed & RESCHEDULE_ELEMENTS:
        changed.add("rescheduled")
    return Classification(frozenset(changed), before, after)


def make_change(
    current: dict[str, Any], previous: dict[str, Any] | None, source: str
) -> ResourceChange:
    version_id, last_updated = version_of(current)
    found = classify(previous, current)
    return ResourceChange(
        resource_type=current["resourceType"],
        resource_id=current["id"],
        version_id=version_id or (last_updated.isoformat() if last_updated else "unversioned"),
        kind=ChangeKind.CREATED if previous is None else ChangeKind.UPDATED,
        current=current,
        previous=previous,
        last_updated=last_updated,
        source=source,
        changes=found.changes,
        status_from=found.status_from,
        status_to=found.status_to,
    )


def make_deletion(
    resource_type: str, resource_id: str, previous: dict[str, Any] | None, when: datetime,
    source: str,
) -> ResourceChange:
    return ResourceChange(
        resource_type=resource_type, resource_id=resource_id,
        version_id=f"deleted@{when.isoformat()}", kind=ChangeKind.DELETED,
        current=None, previous=previous, last_updated=when, source=source,
        changes=frozenset({"deleted"}), status_from=_status(previous),
    )
