"""Read the newest processed version of a resource from our own store (the demo's "EHR")."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from connector.errors import FhirNotFound
from outreach.store.models import ResourceVersion


class StoreResourceSource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with self._sessions() as session:
            row = session.get(ResourceVersion, (resource_type, resource_id))
            if row is None or row.deleted or row.resource is None:
                raise FhirNotFound(f"{resource_type}/{resource_id} not found", status=404)
            return dict(row.resource)
