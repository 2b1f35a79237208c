"""An EHR made of what we ingested: reads give the newest version stored (as the EHR had it when
it told us), for runs with no EHR to ask (the demo, `outreach simulate`). Read-only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from connector.errors import FhirNotFound, FhirUnsupported
from outreach.store.models import ResourceVersion


class IngestedEhr:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        # No CapabilityStatement, no searches: callers fall back to plain reads.
        raise FhirUnsupported(f"no EHR here serves {path}")

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with self._sessions() as session:
            row = session.get(ResourceVersion, (resource_type, resource_id))
            if row is None or row.deleted or row.resource is None:
                raise FhirNotFound(f"{resource_type}/{resource_id} not found", status=404)
            return dict(row.resource)

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        yield from ()

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        raise FhirUnsupported("read-only: nothing is written back here")

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        raise FhirUnsupported("read-only: nothing is written back here")
