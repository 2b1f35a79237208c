"""Polling pass: resources changed since a cursor, oldest first, across pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.client import FhirClient


def fhir_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def changed_since(
    client: FhirClient,
    resource_type: str,
    since: datetime | None,
    *,
    overlap: timedelta = timedelta(seconds=60),
    page_size: int = 100,
) -> Iterator[dict[str, Any]]:
    """Resources with `_lastUpdated` after `since - overlap`; the overlap absorbs clock skew and
    commits that became visible late, and the caller de-duplicates by version."""
    params: dict[str, str | int] = {"_sort": "_lastUpdated", "_count": page_size}
    if since is not None:
        params["_lastUpdated"] = f"gt{fhir_instant(since - overlap)}"
    yield from client.search(resource_type, params)
