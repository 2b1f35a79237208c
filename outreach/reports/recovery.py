"""Staff Tasks and how long they stayed open: the Tasks we wrote (the write-back outbox), each
with its status as the EHR last showed it to our ingest (the poller follows our Tasks by our
identifier system), and the service-recovery ones (a low survey score opened them) summed up."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import InboundMessage, ResourceVersion, Writeback
from rules.changes import parse_instant

OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress",
                  "on-hold"})
CLOSED = frozenset({"completed", "cancelled", "rejected", "failed"})
# entered-in-error is neither: the Task should never have existed, so it is left out of both.
MAX_TASKS = 20_000  # a period's Tasks; a hospital raises tens a day


@dataclass(frozen=True, slots=True)
class TaskFact:
    id: int  # the outbox row (ids only in URLs and pages)
    opened: datetime
    status: str
    closed: datetime | None  # when it was completed, cancelled, rejected or failed
    from_ehr: bool  # the status was read back from the EHR (else: as we wrote it)
    recovery: bool  # a low survey score opened it
    priority: str
    patient: str
    description: str

    def hours_open(self, now: datetime) -> float:
        """Until it was closed, or until `now` while it is open."""
        return max(0.0, ((self.closed or now) - self.opened).total_seconds() / 3600)


def _instant(value: object) -> datetime | None:
    try:
        return parse_instant(value) if isinstance(value, str) else None
    except (ValueError, TypeError):
        return None


def _closed_at(resource: dict[str, Any], made: datetime | None, opened: datetime
               ) -> datetime | None:
    """When a Task that shows closed was closed: its own end of execution when recorded, else
    when that version was made (meta.lastUpdated as ingested, or lastModified as we wrote it:
    staff close Tasks from the clinician view too)."""
    if resource.get("status") not in CLOSED:
        return None
    ended = _instant((resource.get("executionPeriod") or {}).get("end"))
    at = ended or made or _instant(resource.get("lastModified"))
    return max(at, opened) if at is not None else None


def _recovery_keys(session: Session, start: datetime, end: datetime) -> set[str]:
    """The identifier values of the Tasks low scores opened (outreach.replies.inbound names
    each `task-{message id}`, written in the same transaction as the reply)."""
    ids = session.scalars(select(InboundMessage.provider_message_id).where(
        InboundMessage.score_low.is_(True), InboundMessage.received_at >= start,
        InboundMessage.received_at < end))
    return {f"task-{message_id}" for message_id in ids}


def _versions(session: Session, server_ids: list[str]) -> dict[str, ResourceVersion]:
    found: dict[str, ResourceVersion] = {}
    for i in range(0, len(server_ids), 5000):
        for version in session.scalars(select(ResourceVersion).where(
                ResourceVersion.resource_type == "Task",
                ResourceVersion.resource_id.in_(server_ids[i:i + 5000]))):
            found[version.resource_id] = version
    return found


def _fact(row: Writeback, version: ResourceVersion | None, recovery: set[str]) -> TaskFact:
    written: dict[str, Any] = row.resource
    # A deleted Task keeps its last version: we report what it last was.
    current = version.resource if version is not None and version.resource else written
    status = str(current.get("status") or "unknown")
    return TaskFact(
        row.id, row.created_at, status,
        _closed_at(current, (version.last_updated or version.updated_at)
                   if version is not None and version.resource else None, row.created_at),
        from_ehr=version is not None and bool(version.resource),
        recovery=row.identifier.partition("|")[2] in recovery,
        priority=str(written.get("priority", "routine")),
        patient=str((written.get("for") or {}).get("reference", "—")),
        description=str(written.get("description", "")))


def load_tasks(session: Session, start: datetime, end: datetime) -> list[TaskFact]:
    """Every Task we raised in [start, end), newest first, as it stands now."""
    rows = session.scalars(select(Writeback).where(
        Writeback.resource_type == "Task", Writeback.created_at >= start,
        Writeback.created_at < end).order_by(Writeback.created_at.desc()).limit(MAX_TASKS)).all()
    versions = _versions(session, [r.server_id for r in rows if r.server_id])
    recovery = _recovery_keys(session, start, end)
    return [_fact(row, versions.get(row.server_id or ""), recovery) for row in rows]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), interpolated between the two nearest ranks (as numpy's
    default and Excel's PERCENTILE.INC); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _spread(hours: list[float]) -> dict[str, float | None]:
    median, p90 = percentile(hours, 50), percentile(hours, 90)
    return {"median": None if median is None else round(median, 1),
            "p90": None if p90 is None else round(p90, 1)}


def service_recovery(tasks: Iterable[TaskFact], now: datetime) -> dict[str, Any]:
    """The service-recovery Tasks opened in the period: how many, how many are open now and
    closed, and how long they stayed open, in hours (docs/metrics.md)."""
    chosen = [t for t in tasks if t.recovery]
    open_ = [t for t in chosen if t.status in OPEN]
    closed = [t for t in chosen if t.status in CLOSED]
    return {
        "created": len(chosen),
        "open": len(open_),
        "closed": len(closed),
        "by_status": dict(sorted(Counter(t.status for t in chosen).items())),
        "status_from_ehr": sum(t.from_ehr for t in chosen),
        "hours_open": _spread([t.hours_open(now) for t in [*open_, *closed]]),
        "hours_to_close": _spread([t.hours_open(now) for t in closed]),
    }


def open_tasks(tasks: Iterable[TaskFact], limit: int = 25) -> list[TaskFact]:
    """The Tasks still open, service recovery and urgent ones first, then the oldest."""
    still = [t for t in tasks if t.status in OPEN]
    still.sort(key=lambda t: (not t.recovery, t.priority == "routine", t.opened))
    return still[:limit]

