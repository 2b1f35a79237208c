"""Turn a resource version (and the last one we processed) into a ResourceChange."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rules.changes import ChangeKind, ResourceChange, parse_instant


def version_of(resource: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """(meta.versionId, meta.lastUpdated); versionId is opaque (Medplum uses UUIDs)."""
    meta = resource.get("meta") or {}
    updated = meta.get("lastUpdated")
    return meta.get("versionId"), parse_instant(updated) if isinstance(updated, str) else None


def make_change(
    current: dict[str, Any], previous: dict[str, Any] | None, source: str
) -> ResourceChange:
    version_id, last_updated = version_of(current)
    return ResourceChange(
        resource_type=current["resourceType"],
        resource_id=current["id"],
        version_id=version_id or (last_updated.isoformat() if last_updated else "unversioned"),
        kind=ChangeKind.CREATED if previous is None else ChangeKind.UPDATED,
        current=current,
        previous=previous,
        last_updated=last_updated,
        source=source,
    )


def make_deletion(
    resource_type: str, resource_id: str, previous: dict[str, Any] | None, when: datetime,
    source: str,
) -> ResourceChange:
    return ResourceChange(
        resource_type=resource_type, resource_id=resource_id,
        version_id=f"deleted@{when.isoformat()}", kind=ChangeKind.DELETED,
        current=None, previous=previous, last_updated=when, source=source,
    )
