"""Right before a send: is the step still wanted, and where can the patient be reached?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels import OutboundMessage
from channels.templates import TemplateError
from connector.errors import FhirError, FhirNotFound
from outreach.consent import opted_out
from outreach.messages import message_context
from outreach.retry import backoff
from outreach.runtime import Runtime
from outreach.store.models import Enrollment, ScheduledStep, StepState
from rules.planner import anchor_time
from rules.recipients import contact_for, preferred_language
from rules.schema import TRIGGER_TIME, Step


@dataclass(frozen=True)
class Ready:
    """Everything needed to send, gathered before the provider is called."""

    channel: str
    to: str
    message: OutboundMessage
    patient: str
    about: str
    category: str


class Skip(Exception):
    """Not sending now. `fresh` is a newer version of the anchor resource than the one the step
    was planned from: it is ingested afterwards so the whole enrollment follows it."""

    def __init__(self, reason: str, state: StepState = StepState.SKIPPED,
                 retry_at: datetime | None = None, fresh: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.state, self.retry_at, self.fresh = reason, state, retry_at, fresh


def _step_spec(rt: Runtime, enrollment: Enrollment, step_id: str) -> Step:
    journey = rt.journeys.by_name(enrollment.journey)
    if journey is None:
        raise Skip(f"journey {enrollment.journey} is no longer loaded", StepState.CANCELLED)
    spec = next((s for s in journey.spec.steps if s.id == step_id), None)
    if spec is None:
        raise Skip(f"step {step_id!r} is no longer in journey {journey.name}", StepState.CANCELLED)
    return spec


def read(rt: Runtime, reference: str, attempts: int) -> dict[str, Any]:
    if rt.ehr is None:
        raise Skip("no EHR configured to re-check against", StepState.FAILED)
    rtype, _, rid = reference.partition("/")
    try:
        return rt.ehr.read(rtype, rid)
    except FhirNotFound as exc:
        raise Skip(f"{reference} no longer exists", StepState.CANCELLED) from exc
    except FhirError as exc:
        # Cannot re-check (still booked? still reachable?): do not send blind, try later.
        raise Skip(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                   rt.clock.now() + backoff(attempts)) from exc


def _still_wanted(rt: Runtime, enrollment: Enrollment, resource: dict[str, Any]) -> None:
    journey = rt.journeys.by_name(enrollment.journey)
    assert journey is not None
    now = rt.clock.now()
    if journey.cancel_when is not None and journey.cancel_when(resource, now):
        raise Skip(f"cancel_when matched: {journey.cancel_when.source}", StepState.CANCELLED,
                   fresh=resource)
    if journey.when is not None and not journey.when(resource, now):
        raise Skip("trigger condition no longer true", fresh=resource)
    anchor = anchor_time(journey, resource, now)
    if journey.spec.anchor != TRIGGER_TIME and anchor != enrollment.anchor_at:
        # Back to scheduled: ingesting the fresh version re-plans it with the others.
        raise Skip("anchor moved", StepState.SCHEDULED, fresh=resource)


def check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment) -> Ready:
    """Re-check what may have changed since the step was planned, then pick the first listed
    channel that is configured, not excluded by an earlier permanent failure, that the patient
    has a contact point for, and that the patient has not opted out of."""
    spec = _step_spec(rt, enrollment, step.step_id)
    resource = read(rt, enrollment.anchor_reference, step.attempts)
    _still_wanted(rt, enrollment, resource)
    patient = read(rt, enrollment.patient, step.attempts)
    language = preferred_language(patient)
    excluded = set(filter(None, step.excluded_channels.split(",")))
    now, notes = rt.clock.now(), []
    candidates = [(channel, contact_for(patient, channel, now)) for channel in spec.channel
                  if channel in rt.channels and channel not in excluded]
    reachable = [(channel, to) for channel, to in candidates if to is not None]
    with rt.sessions() as session:
        blocked = opted_out(session, reachable)
    for channel, to in reachable:
        if (channel, to) in blocked:
            notes.append(f"opted out of {channel}")
            continue
        context = message_context(rt.settings, patient, resource, enrollment.anchor_at,
                                  rt.settings.zone, language)
        try:
            rendered = rt.templates.render(spec.template, channel, context, language)
        except TemplateError as exc:
            raise Skip(f"template: {exc}", StepState.FAILED) from exc
        message = OutboundMessage(key=step.uid, to=to, text=rendered.text,
                                  subject=rendered.subject, html=rendered.html)
        return Ready(channel, to, message, enrollment.patient, enrollment.anchor_reference,
                     spec.category)
    listed = ", ".join(spec.channel)
    detail = "; ".join(notes) or f"configured: {', '.join(sorted(rt.channels))}"
    if excluded:
        detail += f"; failed before: {', '.join(sorted(excluded))}"
    raise Skip(f"no channel the patient can receive among [{listed}] ({detail})")
