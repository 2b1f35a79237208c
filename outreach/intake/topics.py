"""Topic-based notifications (Backport IG): track each subscription's event count, heartbeat and
gaps in `subscription_status`, ingest the events, and recover what a gap lost.

Recovery uses the EHR's `$events` operation when its CapabilityStatement lists it, else a
reconcile poll; either way the events themselves go through `ingest_notified`, which de-duplicates
by version, so recovering too much costs reads, never duplicate messages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from connector.capabilities import capabilities
from connector.errors import FhirError
from connector.notifications import TopicNotification, parse_notification
from outreach.core.ports import Runtime
from outreach.intake.ingest import IngestResult, ingest_deletion
from outreach.intake.notifications import Ignored, ingest_notified_many
from outreach.store.db import transaction
from outreach.store.models import SubscriptionStatus

log = logging.getLogger(__name__)

SOURCE = "topic"


@dataclass
class TopicResult:
    type: str
    subscription_id: str
    results: list[IngestResult | Ignored] = field(default_factory=list)
    gap: tuple[int, int | None] | None = None   # event numbers lost: first, last (None: unknown)
    recovery: str | None = None                  # "$events" | "poll"


def _gap(row: SubscriptionStatus, note: TopicNotification) -> tuple[int, int | None] | None:
    """Events numbered after what we have seen and before this notification's first event (or,
    for a heartbeat, up to its count) never reached us."""
    seen = row.events_since_start
    numbers = sorted(e.number for e in note.events if e.number is not None)
    if numbers:
        return (seen + 1, numbers[0] - 1) if numbers[0] > seen + 1 else None
    count = note.events_since_start
    if note.type == "heartbeat" and count is not None and count > seen:
        return seen + 1, count
    return None


def _track(rt: Runtime, note: TopicNotification, now: datetime) -> tuple[int, int | None] | None:
    with transaction(rt.sessions) as session:
        row = session.get(SubscriptionStatus, note.subscription_id, with_for_update=True)
        if row is None:
            row = SubscriptionStatus(subscription_id=note.subscription_id, kind="topic",
                                     events_since_start=0, status=note.status or "active")
            session.add(row)
        gap = None if note.type in ("handshake", "query-event") else _gap(row, note)
        counted = [e.number for e in note.events if e.number is not None]
        row.events_since_start = max([row.events_since_start, *counted,
                                      note.events_since_start or 0])
        row.topic = note.topic or row.topic
        row.status = note.status or row.status
        if note.type == "event-notification":
            row.last_event_at = now
        else:
            row.last_heartbeat_at = now
        if gap is not None:
            row.gap_detected_at = now
        row.updated_at = now
    return gap


def _ingest_events(rt: Runtime, note: TopicNotification) -> tuple[list[IngestResult | Ignored],
                                                                   bool]:
    """Ingest each event; True when one named no resource (an `empty` payload): only a poll
    can say what changed."""
    results: list[IngestResult | Ignored] = []
    blind = False
    # Consecutive events are stored in one transaction; a deletion waits for the events
    # before it, so the bundle's order holds.
    run: list[tuple[str, str, dict[str, Any] | None]] = []
    for event in sorted(note.events, key=lambda e: e.number or 0):
        if event.focus is None:
            blind = True
        elif event.deleted:
            results += ingest_notified_many(rt, run, SOURCE)
            run = []
            results.append(ingest_deletion(rt, *event.focus, SOURCE))
        else:
            run.append((*event.focus, event.resource))
    results += ingest_notified_many(rt, run, SOURCE)
    return results, blind


def _recover(rt: Runtime, subscription_id: str, gap: tuple[int, int | None]) -> str:
    if rt.ehr is not None and capabilities(rt.ehr).has_operation("Subscription", "events"):
        params: dict[str, str | int] = {"eventsSinceNumber": str(gap[0]), "content": "id-only"}
        if gap[1] is not None:
            params["eventsUntilNumber"] = str(gap[1])
        try:
            bundle = rt.ehr.get(f"Subscription/{subscription_id}/$events", params)
            _ingest_events(rt, parse_notification(bundle))
            log.info("subscription %s: events %s..%s recovered with $events", subscription_id,
                     gap[0], gap[1] or "")
            return "$events"
        except FhirError as exc:
            log.warning("subscription %s: $events failed (%s); reconciling by polling",
                        subscription_id, exc)
    rt.enqueue.poll()
    return "poll"


def handle_notification(rt: Runtime, note: TopicNotification) -> TopicResult:
    """Process one topic-based notification bundle posted to /fhir/notify."""
    gap = _track(rt, note, rt.clock.now())
    result = TopicResult(note.type, note.subscription_id, gap=gap)
    if note.type in ("event-notification", "query-event"):
        result.results, blind = _ingest_events(rt, note)
        if blind and gap is None:
            rt.enqueue.poll()
            result.recovery = "poll"
    if gap is not None:
        log.warning("subscription %s: events %s..%s missed", note.subscription_id, gap[0],
                    gap[1] or "?")
        result.recovery = _recover(rt, note.subscription_id, gap)
    return result


def check_silence(rt: Runtime) -> list[str]:
    """Topic subscriptions that have sent neither an event nor a heartbeat for longer than
    OUTREACH_TOPIC_SILENCE_SECONDS: a missed heartbeat. Each gets a gap mark and a recovery of
    everything after the last event we saw."""
    now = rt.clock.now()
    limit = now - timedelta(seconds=rt.settings.topic_silence_seconds)
    silent: list[tuple[str, int]] = []
    with transaction(rt.sessions) as session:
        for row in session.scalars(select(SubscriptionStatus).where(
                SubscriptionStatus.kind == "topic", SubscriptionStatus.status == "active")):
            last = max(filter(None, (row.last_event_at, row.last_heartbeat_at, row.updated_at)))
            already = row.gap_detected_at is not None and row.gap_detected_at >= last
            if last < limit and not already:
                row.gap_detected_at = now
                silent.append((row.subscription_id, row.events_since_start))
    for subscription_id, seen in silent:
        log.warning("subscription %s: silent since before %s; recovering", subscription_id,
                    limit.isoformat())
        _recover(rt, subscription_id, (seen + 1, None))
    return [s for s, _ in silent]
