"""Right before a send: is the step still wanted, and where can the patient be reached?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from channels import OutboundMessage
from channels.templates import TemplateError
from connector.errors import FhirError, FhirNotFound
from outreach.admin import PAUSE_RECHECK, paused_journeys
from outreach.consent import opted_out
from outreach.enrollment import sent_recently
from outreach.messages import message_context
from outreach.retry import backoff
from outreach.runtime import Runtime
from outreach.store.models import Enrollment, ScheduledStep, StepState
from rules.caps import DEFAULT_POLICY, Send, allowed_time, counts_toward_caps
from rules.loader import LoadedJourney
from rules.planner import anchor_time, recheck, shift_out_of_quiet_hours
from rules.recipients import Recipient, choose_recipient, patient_timezone
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
                 retry_at: datetime | None = None, fresh: dict[str, Any] | None = None,
                 *, counts: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.state, self.retry_at, self.fresh = reason, state, retry_at, fresh
        self.counts = counts  # whether this counts as an attempt (a pause does not)


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


def _still_wanted(rt: Runtime, journey: LoadedJourney, enrollment: Enrollment,
                  resource: dict[str, Any]) -> None:
    now = rt.clock.now()
    reason = recheck(journey, resource, now)
    if reason is not None:
        state = StepState.CANCELLED if reason.startswith("cancel_when") else StepState.SKIPPED
        raise Skip(reason, state, fresh=resource)
    anchor = anchor_time(journey, resource, now)
    if journey.spec.anchor != TRIGGER_TIME and anchor != enrollment.anchor_at:
        # Back to scheduled: ingesting the fresh version re-plans it with the others.
        raise Skip("anchor moved", StepState.SCHEDULED, fresh=resource)


def _related_persons(rt: Runtime, patient: str) -> list[dict[str, Any]]:
    if rt.fhir is None:
        return []
    try:
        return list(rt.fhir.search("RelatedPerson", {"patient": patient, "_count": 50}))
    except FhirError:
        return []  # Patient.contact still names caregivers; RelatedPerson is a refinement


def _recipients(rt: Runtime, journey: LoadedJourney, spec: Step, step: ScheduledStep,
                patient_ref: str, patient: dict[str, Any]) -> list[Recipient]:
    """Who can receive this step, one per usable channel, in the step's order of preference."""
    mode = spec.recipient or journey.spec.recipient
    excluded = set(filter(None, step.excluded_channels.split(",")))
    related = _related_persons(rt, patient_ref) if mode != "patient" else None
    found = []
    for channel in spec.channel:
        if channel in rt.channels and channel not in excluded:
            recipient = choose_recipient(mode, patient, [channel], rt.clock.now(), related)
            if recipient is not None:
                found.append(recipient)
    return found


def _not_now(rt: Runtime, journey: LoadedJourney, spec: Step, channel: str,
             sent: list[Send], zone: ZoneInfo) -> None:
    """Quiet hours and frequency caps, re-checked at send time: a retried or late step must not
    go out at night or past the cap. Deferrals do not count as attempts."""
    now = rt.clock.now()
    quiet = journey.spec.quiet_hours

    def adjust(moment: datetime) -> datetime:
        return shift_out_of_quiet_hours(moment, quiet, zone) if quiet else moment

    later = adjust(now)
    if counts_toward_caps([channel], spec.cap_exempt, DEFAULT_POLICY):
        later = allowed_time(now, sent, zone, DEFAULT_POLICY, adjust)
    if later > now + timedelta(minutes=1):
        why = "quiet hours" if later == adjust(now) else "frequency cap"
        raise Skip(f"{why}: deferred", StepState.SCHEDULED, later, counts=False)


def check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment) -> Ready:
    """Re-check what may have changed since the step was planned, then pick the first listed
    channel that is configured, not excluded by an earlier permanent failure, on which the
    recipient can be reached and has not opted out; then quiet hours and caps."""
    journey = rt.journeys.by_name(enrollment.journey)
    spec = _step_spec(rt, enrollment, step.step_id)
    assert journey is not None
    resource = read(rt, enrollment.anchor_reference, step.attempts)
    _still_wanted(rt, journey, enrollment, resource)
    patient = read(rt, enrollment.patient, step.attempts)
    zone = patient_timezone(patient) or rt.settings.zone
    recipients = _recipients(rt, journey, spec, step, enrollment.patient, patient)
    # What our own records say, in one session: paused, opted out, already sent lately.
    with rt.sessions() as session:
        if enrollment.journey in paused_journeys(session):
            raise Skip("journey paused", StepState.SCHEDULED, rt.clock.now() + PAUSE_RECHECK,
                       counts=False)
        blocked = opted_out(session, [(r.channel, r.address) for r in recipients])
        sent = sent_recently(session, enrollment.patient, rt.clock.now(), rt.journeys,
                             exclude_step=step.id)
    notes = [f"opted out of {channel}" for channel, _ in sorted(blocked)]
    for recipient in recipients:
        if (recipient.channel, recipient.address) in blocked:
            continue
        _not_now(rt, journey, spec, recipient.channel, sent, zone)
        context = message_context(rt.settings, patient, resource, enrollment.anchor_at, zone,
                                  recipient.language)
        context["first_name"] = recipient.first_name or context["first_name"]
        try:
            rendered = rt.templates.render(spec.template, recipient.channel, context,
                                           recipient.language)
        except TemplateError as exc:
            raise Skip(f"template: {exc}", StepState.FAILED) from exc
        message = OutboundMessage(key=step.uid, to=recipient.address, text=rendered.text,
                                  subject=rendered.subject, html=rendered.html)
        return Ready(recipient.channel, recipient.address, message, enrollment.patient,
                     enrollment.anchor_reference, spec.category)
    listed = ", ".join(spec.channel)
    detail = "; ".join(notes) or f"configured: {', '.join(sorted(rt.channels))}"
    if step.excluded_channels:
        detail += f"; failed before: {step.excluded_channels.replace(',', ', ')}"
    raise Skip(f"no channel the recipient can receive among [{listed}] ({detail})")
