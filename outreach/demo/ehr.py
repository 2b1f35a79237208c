"""The demo's EHR: resources are read from our own store (the versions the demo replayed) and
write-back lands in NDJSON files, one per resource type."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from outreach.store.ingested import IngestedEhr


def _identifiers(resource: dict[str, Any]) -> set[str]:
    found = resource.get("identifier", [])
    found = [found] if isinstance(found, dict) else found  # QuestionnaireResponse has one
    return {f"{i.get('system')}|{i.get('value')}" for i in found}


class DemoEhr(IngestedEhr):
    """Reads give the newest version the demo ingested (as the EHR would have it); writes behave
    like the EHR for write-back (conditional create, update by id) and keep the newest version of
    each resource in `{folder}/{ResourceType}.ndjson`, as a bulk export would. No
    CapabilityStatement: write-back is then assumed possible."""

    def __init__(self, sessions: sessionmaker[Session], folder: Path) -> None:
        super().__init__(sessions)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._by_identifier: dict[str, dict[str, Any]] = {}
        self._by_type: dict[str, dict[str, dict[str, Any]]] = {}

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

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        existing = self._by_identifier.get((if_none_exist or "").removeprefix("identifier="))
        if existing is not None:
            return existing, False
        return self._write({**resource, "id": str(uuid.uuid4())}), True

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        return self._write(resource)

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Only what write-back looks up: a resource of ours by its identifier."""
        found = self._by_identifier.get(str((params or {}).get("identifier", "")))
        if found is not None and found["resourceType"] == resource_type:
            yield found

    def written(self) -> dict[str, int]:
        return {rtype: len(items) for rtype, items in sorted(self._by_type.items())}
