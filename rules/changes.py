"""ResourceChange: what the connector hands to the rules when a resource version is seen."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One new version of one resource; `previous` is the last version we processed, if any."""

    resource_type: str
    resource_id: str
    version_id: str
    kind: ChangeKind
    current: dict[str, Any] | None
    previous: dict[str, Any] | None = None
    last_updated: datetime | None = None
    source: str = "unknown"
    # What differs from `previous` (connector.changes.classify): the top-level element names
    # that changed ("status", "start", "end", "participant", ...; meta and text never count),
    # plus "created", "deleted" and "rescheduled" (start or end moved). Empty when not classified.
    changes: frozenset[str] = frozenset()
    status_from: str | None = None
    status_to: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"

    @property
    def resource(self) -> dict[str, Any] | None:
        """The version the rules should look at: the current one, or the last one for a delete."""
        return self.current if self.current is not None else self.previous


def parse_instant(value: str) -> datetime:
    """A FHIR instant/dateTime as an aware UTC datetime (date-only values are midnight UTC)."""
    if len(value) in (4, 7):  # FHIR dateTime allows YYYY and YYYY-MM: their first instant
        value = value + ("-01-01" if len(value) == 4 else "-01")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
