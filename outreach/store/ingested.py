"""An EHR made of what we ingested: reads give the newest version stored (as the EHR had it when
it told us), for runs with no EHR to ask (the demo, `outreach simulate`). Read-only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from connector.errors import FhirNotFound, FhirUnsupported
from outreach.store.models import ResourceVersion

# Built once: every send-time check reads the resource and the patient through this.
_READ = select(ResourceVersion.deleted, ResourceVersion.resource).where(
    ResourceVersion.resource_type == bindparam("rtype"),
    ResourceVersion.resource_id == bindparam("rid"))


class IngestedEhr:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        # No CapabilityStatement, no searches: callers fall back to plain reads.
        raise FhirUnsupported(f"no EHR here serves {path}")

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        # A bare connection: a session around one read cost as much as the read.
        with self._sessions.kw["bind"].connect() as connection:
            row = connection.execute(_READ, {"rtype": resource_type, "rid": resource_id}).first()
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
