"""Checks beyond the schema: journeys that can never fire, steps that can never be sent,
unknown templates, status codes the resource does not have."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rules.durations import parse_at
from rules.fhirpath import Condition, FhirPathError, is_constant
from rules.schema import STATUSES, TRIGGER_TIME, WHEN_ELEMENT, Event, Journey, StatusEvent

Report = Callable[[Sequence[object], str], None]
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Context:
    journey: Journey
    when: Condition | None
    cancel_when: Condition | None
    templates: set[str] | None


def semantic_problems(ctx: Context, report: Report) -> None:
    """Report (location, message) for every problem the schema cannot see."""
    _trigger_problems(ctx, report)
    _condition_problems(ctx, report)
    _step_problems(ctx, report)


def _constant_value(condition: Condition | None) -> bool | None:
    if condition is None or not is_constant(condition.source):
        return None
    try:
        return condition({}, _EPOCH)
    except FhirPathError:
        return None


def _condition_problems(ctx: Context, report: Report) -> None:
    if _constant_value(ctx.when) is False:
        report(["trigger", "when"], "trigger.when is always false: the journey can never fire")
    if _constant_value(ctx.cancel_when) is True:
        report(["cancel_when"],
               "cancel_when is always true: every enrollment would be cancelled at once")
    if ctx.when is not None and ctx.cancel_when is not None \
            and ctx.when.source.strip() == ctx.cancel_when.source.strip():
        report(["cancel_when"], "cancel_when is the trigger condition itself: every enrollment "
                                "would be cancelled by its next change")


def _trigger_problems(ctx: Context, report: Report) -> None:
    trigger = ctx.journey.trigger
    resource = trigger.resource_type
    events = trigger.events
    if events and all(e == Event.DELETED for e in events):
        report(["trigger", "on"], "trigger.on lists only `deleted`: a deleted resource is never "
                                  "enrolled, so the journey can never fire")
    for index, event in enumerate(events):
        loc: list[object] = ["trigger", "on", index]
        if event == Event.RESCHEDULED and resource not in WHEN_ELEMENT:
            report(loc, f"trigger.on.{index}: a {resource} has no time to be rescheduled")
        if isinstance(event, StatusEvent):
            _status_problems(resource, event, loc, report)


def _status_problems(resource: str, event: StatusEvent, loc: list[object],
                     report: Report) -> None:
    known = STATUSES[resource]
    where = ".".join(str(p) for p in loc)
    if not known:
        report(loc, f"{where}: a {resource} has no status")
        return
    for side, codes in (("from", event.status.from_), ("to", event.status.to)):
        for i, code in enumerate(codes or []):
            if code not in known:
                report([*loc, "status", side, i],
                       f"{where}.status.{side}: {code!r} is not a {resource} status "
                       f"(one of {', '.join(sorted(known))})")
    same = event.status.from_ is not None and event.status.from_ == event.status.to
    if same and len(event.status.to or []) == 1:
        report([*loc, "status"], f"{where}: from and to are the same status: it can never change")


def _step_problems(ctx: Context, report: Report) -> None:
    journey, seen = ctx.journey, set[str]()
    for index, step in enumerate(journey.steps):
        loc: list[object] = ["steps", index]
        if step.id in seen:
            report([*loc, "id"], f"duplicate step id {step.id!r}")
        seen.add(step.id)
        # Each template with where it is named: an unknown one is pointed at, not its list.
        templates: list[tuple[list[object], str]] = [(["template"], str(step.template))]
        if step.variants:
            templates = [(["variants", i, "template"], variant.template)
                         for i, variant in enumerate(step.variants)]
        if step.survey and step.survey.recovery_template:
            templates.append((["survey"], step.survey.recovery_template))
        for key, name in templates:
            if ctx.templates is not None and name not in ctx.templates:
                report([*loc, *key], f"unknown template {name!r}")
        if journey.anchor == TRIGGER_TIME and parse_at(step.at).before_anchor:
            report([*loc, "at"], f"steps.{index}.at: {step.at!r} is before the anchor, and the "
                                 "anchor is the trigger time: the step would always be too late")
        if (step.replies or step.survey) and "sms" not in step.channel:
            report([*loc, "channel"], f"steps.{index}: replies arrive by SMS, but sms is not "
                                      "among its channels")
