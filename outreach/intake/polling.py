"""The polling reconciler: ask the EHR what changed, ingest it, move the cursor.

How depends on what the EHR can search (its CapabilityStatement): `_lastUpdated` after the
cursor (minus an overlap) when it has it, else a sweep of a date window around now. A pass that
fails part-way (the EHR down after the client's own retries) raises FhirUnavailable; the cursor
only ever moves past resources already ingested, so the next pass resumes where this one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.sql import select

from connector.capabilities import PollStrategy, capabilities
from connector.changes import version_of
from connector.errors import (
    FhirAuthError,
    FhirError,
    FhirUnavailable,
    FhirUnsupported,
    InvalidResource,
)
from connector.polling import changed_since, dated_between, updated_between, window_slices
from connector.resources import validate_resource
from outreach.core.ports import Runtime
from outreach.intake.batch import ingest_many
from outreach.store.db import transaction
from outreach.store.models import PollCursor, ResourceVersion

log = logging.getLogger(__name__)
# The cursor of the pass over our own Tasks (a journey listening to Task would use "Task").
OUR_TASKS = "Task:ours"

def plan(rt: Runtime) -> dict[str, PollStrategy | FhirUnsupported]:
    """Per resource type a journey listens to: how it is polled, or why it cannot be."""
    assert rt.ehr is not None, "polling needs OUTREACH_FHIR_BASE_URL"
    caps = capabilities(rt.ehr)
    strategies: dict[str, PollStrategy | FhirUnsupported] = {}
    for rtype in rt.journeys.resource_types:
        try:
            strategies[rtype] = caps.poll_strategy(rtype)
        except FhirUnsupported as exc:
            strategies[rtype] = exc
    return strategies


def poll_once(rt: Runtime) -> dict[str, int]:
    """One pass over every resource type a journey listens to, and over the Tasks we wrote;
    returns versions processed per type. Types the EHR cannot be polled for are left out and
    logged with the reason."""
    assert rt.ehr is not None, "polling needs OUTREACH_FHIR_BASE_URL"
    counts: dict[str, int] = {}
    silent = capabilities(rt.ehr).silent
    for rtype, strategy in plan(rt).items():
        if isinstance(strategy, FhirUnsupported):
            log.error("poll %s: not possible on this EHR: %s", rtype, strategy)
            continue
        try:
            counts[rtype] = _poll(rt, rtype, strategy)
        except (FhirUnavailable, FhirAuthError):
            raise  # the next pass resumes from the cursor
        except FhirError as exc:
            if not silent:
                raise
            # The CapabilityStatement said nothing, so we tried: say what the EHR answered.
            log.error("poll %s: the EHR's CapabilityStatement lists no resources; tried polling "
                      "by %s and the EHR refused: %s", rtype, strategy.value, exc)
            continue
        log.info("poll %s (%s): %s new versions", rtype, strategy.value, counts[rtype])
    # Last: the journeys' own types come first, whatever the EHR makes of this search.
    if "Task" not in rt.journeys.resource_types:  # else the pass above read every Task
        tasks = _poll_our_tasks(rt)
        if tasks is not None:
            counts["Task"] = tasks
    return counts


def _poll(rt: Runtime, rtype: str, strategy: PollStrategy) -> int:
    if strategy is PollStrategy.LAST_UPDATED:
        return _poll_last_updated(rt, rtype)
    return _sweep_window(rt, rtype)


def backfill(rt: Runtime, start: datetime, end: datetime) -> dict[str, int]:
    """Ingest every resource dated in [start, end] (by `date` where the type has it, else by
    `_lastUpdated`): what exists before go-live. A type never polled gets its cursor set to when
    the backfill began, so the next poll reads only what changed since."""
    assert rt.ehr is not None, "backfill needs OUTREACH_FHIR_BASE_URL"
    began = rt.clock.now()
    caps = capabilities(rt.ehr)
    counts: dict[str, int] = {}
    for rtype in rt.journeys.resource_types:
        params = caps.search_params(rtype)
        if "date" in params:
            found = dated_between(rt.ehr, rtype, start, end)
        elif "_lastUpdated" in params:
            found = updated_between(rt.ehr, rtype, start, end)
        else:
            log.error("backfill %s: the EHR can search it by neither date nor _lastUpdated", rtype)
            continue
        counts[rtype] = _ingest_all(rt, rtype, found, source="backfill")
        with transaction(rt.sessions) as session:
            if session.get(PollCursor, rtype) is None:
                session.add(PollCursor(resource_type=rtype, last_updated=began, polled_at=began))
    return counts


def _poll_our_tasks(rt: Runtime) -> int | None:
    """The later versions of the Tasks we wrote (staff accept, complete or cancel them in the
    EHR), for the report's time open: one search a pass for all of them, by our identifier
    system, never a read per Task. None when the EHR cannot search Tasks that way."""
    assert rt.ehr is not None
    caps = capabilities(rt.ehr)
    if not caps.silent and not {"_lastUpdated", "identifier"} <= caps.search_params("Task"):
        log.info("poll Task: the EHR cannot search Tasks by identifier and _lastUpdated; "
                 "service-recovery Tasks are reported with the status we wrote")
        return None
    try:
        found = _poll_last_updated(rt, "Task", cursor_key=OUR_TASKS,
                                   narrow={"identifier": f"{rt.settings.identifier_system}|"})
    except (FhirUnavailable, FhirAuthError):
        raise  # the next pass resumes from the cursor
    except FhirError as exc:  # e.g. 400: it lists the parameter but not the `system|` form
        log.error("poll Task (ours): the EHR refused the search: %s", exc)
        return None
    log.info("poll Task (ours): %s new versions", found)
    return found


def _poll_last_updated(rt: Runtime, rtype: str, *, cursor_key: str | None = None,
                       narrow: dict[str, str] | None = None) -> int:
    assert rt.ehr is not None
    key = cursor_key or rtype
    with transaction(rt.sessions) as session:
        cursor = session.get(PollCursor, key)
        since = cursor.last_updated if cursor else None
    overlap = timedelta(seconds=rt.settings.poll_overlap_seconds)
    processed = 0
    for page in _chunks(changed_since(rt.ehr, rtype, since, overlap=overlap, narrow=narrow),
                        100):
        processed += _ingest_all(rt, rtype, page, source="poll")
        newest = max((u for u in (version_of(r)[1] for r in page) if u is not None), default=None)
        if newest is not None and (since is None or newest > since):
            since = newest
            _advance(rt, key, newest)
    return processed


def _sweep_window(rt: Runtime, rtype: str) -> int:
    """No `_lastUpdated`: re-read everything dated near now each pass. Unchanged versions are
    filtered in one query per page, so the cost is the EHR's search, not our ingest."""
    assert rt.ehr is not None
    s = rt.settings
    slices = window_slices(rt.clock.now(), past=timedelta(days=s.poll_window_past_days),
                           future=timedelta(days=s.poll_window_future_days),
                           size=timedelta(days=s.poll_window_slice_days))
    processed, newest = 0, None
    for start, end in slices:
        for page in _chunks(dated_between(rt.ehr, rtype, start, end), 100):
            processed += _ingest_all(rt, rtype, page, source="poll-window")
            stamps = [u for u in (version_of(r)[1] for r in page) if u is not None]
            newest = max([*stamps, *([newest] if newest else [])], default=None)
    if newest is not None:
        _advance(rt, rtype, newest)
    return processed


def _ingest_all(rt: Runtime, rtype: str, resources: Iterable[dict[str, Any]], source: str) -> int:
    """Ingest a page at a time, each page in one transaction (intake.batch); a version that
    cannot be stored is raised once the rest of its page is."""
    processed = 0
    for chunk in _chunks(resources, 100):
        valid = []
        for resource in _unseen(rt, rtype, chunk):
            try:
                validate_resource(resource, rtype)
            except InvalidResource as exc:
                log.warning("%s %s/%s: not valid R4, skipped: %s", source, rtype,
                            resource.get("id"), exc)
                continue
            valid.append((resource, source))
        results = ingest_many(rt, valid)
        for result in results:
            if isinstance(result, Exception):
                raise result
        processed += sum(r.outcome == "processed" for r in results
                         if not isinstance(r, Exception))
    return processed


def _unseen(rt: Runtime, rtype: str, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop versions we already hold, in one query: the overlap and the window sweep re-read
    many resources that have not changed."""
    keys = [(rtype, str(r.get("id"))) for r in resources]
    with rt.sessions() as session:
        rows = session.execute(
            select(ResourceVersion.resource_id, ResourceVersion.version_id).where(
                tuple_(ResourceVersion.resource_type, ResourceVersion.resource_id).in_(keys))
        )
        held = {resource_id: version_id for resource_id, version_id in rows}
    return [r for r in resources if held.get(str(r.get("id"))) != version_of(r)[0]
            or version_of(r)[0] is None]


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _advance(rt: Runtime, rtype: str, updated: datetime) -> None:
    with transaction(rt.sessions) as session:
        cursor = session.get(PollCursor, rtype)
        now = rt.clock.now()
        if cursor is None:
            session.add(PollCursor(resource_type=rtype, last_updated=updated, polled_at=now))
        else:
            cursor.last_updated, cursor.polled_at = updated, now
