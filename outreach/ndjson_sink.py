"""A write-back target that appends resources to an NDJSON file (the demo's EHR write-back)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any


class NdjsonWriteback:
    """Behaves like conditional create: the same If-None-Exist query is written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        if if_none_exist and if_none_exist in self._seen:
            return self._seen[if_none_exist], False
        stored = {**resource, "id": str(uuid.uuid4())}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(stored, ensure_ascii=False) + "\n")
        if if_none_exist:
            self._seen[if_none_exist] = stored
        return stored, True

    def __len__(self) -> int:
        return len(self._seen)
