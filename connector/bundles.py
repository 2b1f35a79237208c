"""Transaction Bundles for write-back (pure; no I/O): the entries, and what the EHR answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    """One write in a transaction: a conditional create (`if_none_exist`), an update by id, or a
    conditional update (`url` with a search)."""

    resource: dict[str, Any]
    method: str  # POST | PUT
    url: str
    if_none_exist: str | None = None
    if_match: str | None = None


def transaction(entries: list[Entry]) -> dict[str, Any]:
    bundle_entries = []
    for entry in entries:
        request: dict[str, Any] = {"method": entry.method, "url": entry.url}
        if entry.if_none_exist:
            request["ifNoneExist"] = entry.if_none_exist
        if entry.if_match:
            request["ifMatch"] = entry.if_match
        bundle_entries.append({"resource": entry.resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries}


def written_ids(response: dict[str, Any], count: int) -> list[str | None]:
    """The server id of each entry's resource, in request order (R4: the response has one entry
    per request entry, in the same order), from its `location` or returned resource; None where
    the answer does not say."""
    entries = response.get("entry")
    found: list[str | None] = []
    for index in range(count):
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        found.append(_entry_id(entry) if isinstance(entry, dict) else None)
    return found


def _entry_id(entry: dict[str, Any]) -> str | None:
    resource = entry.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return str(resource["id"])
    answer = entry.get("response")
    location = answer.get("location") if isinstance(answer, dict) else None
    if not isinstance(location, str):
        return None
    # `Type/id`, `Type/id/_history/v`, or an absolute URL ending in either.
    parts = location.split("?")[0].rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return parts[-1] if len(parts) >= 2 and parts[-1] else None
