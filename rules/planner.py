"""Match a change against a journey and plan its steps in time (pure functions of their inputs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from rules.changes import ResourceChange, parse_instant
from rules.durations import parse_offset
from rules.loader import LoadedJourney
from rules.schema import ANCHORS, TRIGGER_TIME, QuietHours, Step

Action = Literal["enroll", "replan", "cancel", "ignore"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    anchor_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PlannedStep:
    step: Step
    due_at: datetime
    skip_reason: str | None = None


def _element(resource: dict[str, Any], dotted: str) -> Any:
    value: Any = resource
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def anchor_time(journey: LoadedJourney, resource: dict[str, Any], now: datetime) -> datetime | None:
    anchor = journey.spec.anchor
    if anchor == TRIGGER_TIME:
        return now
    raw = _element(resource, ANCHORS[journey.spec.trigger.resource][anchor])
    return parse_instant(raw) if isinstance(raw, str) else None


def _changed(fields: list[str], change: ResourceChange) -> bool:
    if change.previous is None or change.current is None:
        return False
    return any(_element(change.previous, f) != _element(change.current, f) for f in fields)


def decide(
    journey: LoadedJourney,
    change: ResourceChange,
    now: datetime,
    enrolled_anchor: datetime | None,
    enrolled: bool,
) -> Decision:
    """What this change means for this journey, given whether the resource is already enrolled."""
    spec = journey.spec
    if change.resource_type != spec.trigger.resource:
        return Decision("ignore", "other resource type")
    resource = change.current
    if resource is None:
        return Decision("cancel", "resource deleted") if enrolled else Decision("ignore", "deleted")
    if enrolled:
        if journey.cancel_when is not None and journey.cancel_when(resource, now, change.previous):
            return Decision("cancel", f"cancel_when matched: {journey.cancel_when.source}")
        anchor = anchor_time(journey, resource, now)
        moved = anchor is not None and anchor != enrolled_anchor and spec.anchor != TRIGGER_TIME
        if moved or _changed(spec.replan_on_change, change):
            return Decision("replan", "anchor moved", anchor)
        return Decision("ignore", "already enrolled")
    if change.kind not in spec.trigger.on:
        return Decision("ignore", f"change kind {change.kind.value} not in trigger.on")
    if journey.when is not None and not journey.when(resource, now, change.previous):
        return Decision("ignore", "trigger condition false")
    anchor = anchor_time(journey, resource, now)
    if anchor is None:
        return Decision("ignore", f"resource has no {spec.anchor}")
    return Decision("enroll", "trigger matched", anchor)


def shift_out_of_quiet_hours(due: datetime, quiet: QuietHours, tz: ZoneInfo) -> datetime:
    """Move a time inside the quiet window to the window's end, in the patient's zone."""
    local = due.astimezone(tz)
    start, end = quiet.start, quiet.end
    clock = local.timetz().replace(tzinfo=None)
    overnight = start > end
    inside = (clock >= start or clock < end) if overnight else (start <= clock < end)
    if not inside:
        return due
    end_day = local.date() + timedelta(days=1) if overnight and clock >= start else local.date()
    shifted = datetime.combine(end_day, end, tzinfo=tz)
    return shifted.astimezone(UTC)


def plan_steps(
    journey: LoadedJourney, anchor_at: datetime, now: datetime, tz: ZoneInfo
) -> list[PlannedStep]:
    """Due times for every step; a step that can no longer be useful carries a skip reason."""
    planned = []
    for step in journey.spec.steps:
        offset = parse_offset(step.at)
        due = now if offset is None else anchor_at + offset
        if journey.spec.quiet_hours is not None:
            due = shift_out_of_quiet_hours(due, journey.spec.quiet_hours, tz)
        reason = None
        if offset is not None and due < now:
            reason = f"due {due.isoformat()} had passed when planned"
        elif offset is not None and offset < timedelta(0) and due >= anchor_at:
            reason = "quiet hours would push it past the anchor time"
        planned.append(PlannedStep(step, max(due, now), reason))
    return planned

