"""A write-back target that appends resources to an NDJSON file (the demo's EHR write-back)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _identifiers(resource: dict[str, Any]) -> set[str]:
    return {f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", [])}


class NdjsonWriteback:
    """Behaves like the EHR for write-back: conditional create writes an identifier once; an
    update appends the new version (the file is a log of what would have been written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_identifier: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def _write(self, resource: dict[str, Any]) -> dict[str, Any]:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(resource, ensure_ascii=False) + "\n")
        for identifier in _identifiers(resource):
            self._by_identifier[identifier] = resource
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
        self, resource_type: str, params: Mapping[str, str | int] | None = None
    ) -> Iterator[dict[str, Any]]:
        found = self._by_identifier.get(str((params or {}).get("identifier", "")))
        if found is not None and found["resourceType"] == resource_type:
            yield found

    def __len__(self) -> int:
        return len(self._by_identifier)
