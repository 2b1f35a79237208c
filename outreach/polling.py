"""The polling pass: ask the EHR what changed since the cursor, ingest it, move the cursor."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from connector.changes import version_of
from connector.errors import InvalidResource
from connector.polling import changed_since
from connector.resources import validate_resource
from outreach.ingest import ingest
from outreach.runtime import Runtime
from outreach.store.db import transaction
from outreach.store.models import PollCursor

log = logging.getLogger(__name__)


def poll_once(rt: Runtime) -> dict[str, int]:
    """One pass over every resource type a journey listens to; returns versions processed per
    type. The cursor only moves after a resource was ingested, so a crash re-reads, never skips."""
    assert rt.fhir is not None, "polling needs OUTREACH_FHIR_BASE_URL"
    overlap = timedelta(seconds=rt.settings.poll_overlap_seconds)
    counts: dict[str, int] = {}
    for rtype in rt.journeys.resource_types:
        with transaction(rt.sessions) as session:
            cursor = session.get(PollCursor, rtype)
            since = cursor.last_updated if cursor else None
        processed = 0
        for resource in changed_since(rt.fhir, rtype, since, overlap=overlap):
            try:
                validate_resource(resource, rtype)
            except InvalidResource as exc:
                log.warning("poll %s/%s: not valid R4, skipped: %s", rtype, resource.get("id"),
                            exc)
            else:
                processed += ingest(rt, resource, source="poll").outcome == "processed"
            _, updated = version_of(resource)
            if updated is not None and (since is None or updated > since):
                since = updated
                _advance(rt, rtype, updated)
        counts[rtype] = processed
        log.info("poll %s: %s new versions", rtype, processed)
    return counts


def _advance(rt: Runtime, rtype: str, updated: datetime) -> None:
    with transaction(rt.sessions) as session:
        cursor = session.get(PollCursor, rtype)
        now = rt.clock.now()
        if cursor is None:
            session.add(PollCursor(resource_type=rtype, last_updated=updated, polled_at=now))
        else:
            cursor.last_updated, cursor.polled_at = updated, now
