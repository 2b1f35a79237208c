"""Polling searches: resources changed since a cursor, or dated inside a window, across pages."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from connector.client import FhirApi


def fhir_instant(moment: datetime) -> str:
    return _utc_instant(moment.astimezone(UTC))


@lru_cache(maxsize=256)  # a batch stamps every request it builds with the same `now`; keyed in
def _utc_instant(moment: datetime) -> str:  # UTC, where no two instants compare equal
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def changed_since(
    client: FhirApi,
    resource_type: str,
    since: datetime | None,
    *,
    overlap: timedelta = timedelta(seconds=60),
    page_size: int = 100,
    narrow: Mapping[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Resources with `_lastUpdated` after `since - overlap`; the overlap absorbs clock skew and
    commits that became visible late, and the caller de-duplicates by version. `narrow` adds
    search parameters (`identifier=system|`: only the Tasks we wrote)."""
    params: dict[str, str | int | list[str]] = {"_sort": "_lastUpdated", "_count": page_size,
                                                **(narrow or {})}
    if since is not None:
        params["_lastUpdated"] = f"gt{fhir_instant(since - overlap)}"
    yield from client.search(resource_type, params)


def updated_between(
    client: FhirApi, resource_type: str, start: datetime, end: datetime, *,
    page_size: int = 100,
) -> Iterator[dict[str, Any]]:
    """Resources last changed inside [start, end] (a backfill of changes)."""
    params: dict[str, str | int | list[str]] = {
        "_lastUpdated": [f"ge{fhir_instant(start)}", f"le{fhir_instant(end)}"],
        "_count": page_size,
    }
    yield from client.search(resource_type, params)


def dated_between(
    client: FhirApi, resource_type: str, start: datetime, end: datetime, *,
    page_size: int = 100,
) -> Iterator[dict[str, Any]]:
    """Resources whose `date` search parameter (Appointment.start, Encounter.period) falls in
    [start, end): the only way to find changes on an EHR without `_lastUpdated`."""
    params: dict[str, str | int | list[str]] = {
        "date": [f"ge{fhir_instant(start)}", f"lt{fhir_instant(end)}"],
        "_count": page_size,
    }
    yield from client.search(resource_type, params)


def window_slices(
    now: datetime, *, past: timedelta, future: timedelta, size: timedelta
) -> list[tuple[datetime, datetime]]:
    """[now - past, now + future) cut into slices of `size`: each search stays small, and a
    failure part-way loses only the slice in flight."""
    slices, start, end = [], now - past, now + future
    while start < end:
        slices.append((start, min(start + size, end)))
        start += size
    return slices
