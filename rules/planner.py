"""Match a change against a journey and plan its steps in time (pure functions of their inputs)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from rules.caps import DEFAULT_POLICY, CapPolicy, Send, allowed_time, counts_toward_caps
from rules.changes import ChangeKind, ResourceChange, parse_instant
from rules.durations import parse_at
from rules.fhirpath import SharedResults
from rules.loader import LoadedJourney
from rules.schema import ANCHORS, TRIGGER_TIME, WHEN_ELEMENT, Event, QuietHours, StatusEvent, Step

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
    deferred_by: str | None = None  # "quiet hours" or "the frequency cap" moved it later


def element(resource: dict[str, Any] | None, dotted: str) -> Any:
    value: Any = resource
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _instant(resource: dict[str, Any] | None, dotted: str) -> datetime | None:
    raw = element(resource, dotted)
    try:
        return parse_instant(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def anchor_time(journey: LoadedJourney, resource: dict[str, Any], now: datetime) -> datetime | None:
    anchor = journey.spec.anchor
    if anchor == TRIGGER_TIME:
        return now
    return _instant(resource, ANCHORS[journey.spec.trigger.resource_type][anchor])


def _changed(fields: list[str], change: ResourceChange) -> bool:
    if change.previous is None or change.current is None:
        return False
    return any(element(change.previous, f) != element(change.current, f) for f in fields)


def _status_matches(event: StatusEvent, change: ResourceChange) -> bool:
    before = element(change.previous, "status") if change.previous is not None else None
    after = element(change.current, "status")
    if after is None or before == after:
        return False
    wanted = event.status
    if wanted.to is not None and after not in wanted.to:
        return False
    if wanted.from_ is None:
        return True
    return before is not None and before in wanted.from_


def _rescheduled(change: ResourceChange) -> bool:
    dotted = WHEN_ELEMENT.get(change.resource_type)
    if dotted is None or change.previous is None or change.current is None:
        return False
    before, after = _instant(change.previous, dotted), _instant(change.current, dotted)
    return before is not None and after is not None and before != after


def event_matches(event: Event | StatusEvent, change: ResourceChange) -> bool:
    """Whether one `trigger.on` item describes this change."""
    if isinstance(event, StatusEvent):
        return _status_matches(event, change)
    if event == Event.RESCHEDULED:
        return _rescheduled(change)
    return change.kind.value == event.value


def _matching_event(journey: LoadedJourney, change: ResourceChange) -> str | None:
    for event in journey.spec.trigger.events:
        if event_matches(event, change):
            if isinstance(event, StatusEvent):
                before = element(change.previous, "status") or "new"
                return f"status {before} → {element(change.current, 'status')}"
            return str(event.value)
    return None


def _decide_enrolled(
    journey: LoadedJourney, change: ResourceChange, now: datetime,
    enrolled_anchor: datetime | None, resource: dict[str, Any], shared: SharedResults | None,
) -> Decision:
    spec = journey.spec
    cancel_when = journey.cancel_when
    if cancel_when is not None and cancel_when(resource, now, change.previous, shared):
        return Decision("cancel", f"cancel_when matched: {cancel_when.source}")
    anchor = anchor_time(journey, resource, now)
    moved = anchor is not None and anchor != enrolled_anchor and spec.anchor != TRIGGER_TIME
    if moved or _changed(spec.replan_on_change, change):
        return Decision("replan", "anchor moved", anchor)
    return Decision("ignore", "already enrolled")


def decide(
    journey: LoadedJourney,
    change: ResourceChange,
    now: datetime,
    enrolled_anchor: datetime | None,
    enrolled: bool,
    shared: SharedResults | None = None,
) -> Decision:
    """What this change means for this journey, given whether the resource is already enrolled.

    `shared` (made for this change's current and previous versions and `now`) lets the journeys
    deciding on the same change evaluate each distinct condition once."""
    spec = journey.spec
    if change.resource_type != spec.trigger.resource_type:
        return Decision("ignore", "other resource type")
    resource = change.current
    if resource is None:
        return Decision("cancel", "resource deleted") if enrolled else Decision("ignore", "deleted")
    if enrolled:
        return _decide_enrolled(journey, change, now, enrolled_anchor, resource, shared)
    matched = _matching_event(journey, change)
    if matched is None:
        return Decision("ignore", f"change ({change.kind.value}) not in trigger.on")
    if journey.when is not None and not journey.when(resource, now, change.previous, shared):
        return Decision("ignore", "trigger condition false")
    return enroll_decision(journey, resource, now, f"trigger matched: {matched}")


def enroll_decision(
    journey: LoadedJourney, resource: dict[str, Any], now: datetime, reason: str
) -> Decision:
    anchor = anchor_time(journey, resource, now)
    if anchor is None:
        return Decision("ignore", f"resource has no {journey.spec.anchor}")
    return Decision("enroll", reason, anchor)


def recheck(journey: LoadedJourney, resource: dict[str, Any], now: datetime) -> str | None:
    """Right before a send, on the EHR's current version: why the journey no longer applies,
    or None. `%previous` is empty here, so a `when` reading it is not re-checked."""
    if journey.cancel_when is not None and journey.cancel_when(resource, now):
        return f"cancel_when matched: {journey.cancel_when.source}"
    when = journey.when
    if when is not None and "%previous" not in when.source and not when(resource, now):
        return "trigger condition no longer true"
    return None


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
    shifted = datetime.combine(end_day, end, tzinfo=tz).astimezone(UTC)
    # A DST jump can make the wall-clock end land a little before `due`: never move backwards.
    return max(shifted, due)


def plan_steps(
    journey: LoadedJourney, anchor_at: datetime, now: datetime, tz: ZoneInfo,
    sends: Sequence[Send] = (), policy: CapPolicy | None = DEFAULT_POLICY,
    settled: Collection[str] = (),
) -> list[PlannedStep]:
    """Due times for every step; a step that can no longer be useful carries a skip reason.

    `sends` are the patient's other sent and scheduled messages (all journeys): with `policy`,
    a step that would exceed the per-patient caps is deferred (rules.caps), never dropped,
    unless deferring pushes a reminder past its anchor. `settled` names steps a re-plan leaves
    as they are (sent, cancelled): they take no cap room at their new time (a sent one is in
    `sends` already, at the time it went)."""
    quiet = journey.spec.quiet_hours

    def adjust(moment: datetime) -> datetime:
        return shift_out_of_quiet_hours(moment, quiet, tz) if quiet is not None else moment

    by_time = []
    for index, step in enumerate(journey.spec.steps):
        offset = parse_at(step.at)
        by_time.append((offset.due(anchor_at, now, tz), index, step, offset))
    taken = list(sends)
    planned: dict[int, PlannedStep] = {}
    # Earlier steps claim cap room first, whatever order the file lists them in.
    for due, index, step, offset in sorted(by_time, key=lambda item: (item[0], item[1])):
        at = adjust(max(due, now))
        # Quiet hours are looked up once when the step is not late (most are): `at` is then it.
        if not offset.immediate and (at if due >= now else adjust(due)) < now:
            planned[index] = PlannedStep(step, now, f"due {due.isoformat()} had passed when "
                                                    "planned")
            continue
        counted = policy is not None and step.id not in settled and counts_toward_caps(
            step.channel, step.cap_exempt, policy)
        final = allowed_time(at, taken, tz, policy, adjust) if counted and policy else at
        before_anchor = offset.before_anchor or (offset.clock is not None and due < anchor_at)
        reason = None
        what = ("the frequency cap" if final != at
                else "quiet hours" if at != max(due, now) else None)
        if before_anchor and final >= anchor_at:
            reason = f"{what or 'quiet hours'} would push it past the anchor time"
        elif counted:
            taken.append(Send(final, step.channel[0]))
        planned[index] = PlannedStep(step, final, reason, what)
    return [planned[i] for i in range(len(journey.spec.steps))]


__all__ = [
    "ChangeKind", "Decision", "PlannedStep", "SharedResults", "anchor_time", "decide", "element",
    "plan_steps", "recheck", "shift_out_of_quiet_hours",
]
