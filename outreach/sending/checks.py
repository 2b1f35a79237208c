"""Right before a send: is the step still wanted, and where can the patient be reached?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels import OutboundMessage
from channels.templates import TemplateError
from connector.errors import FhirError, FhirNotFound
from outreach.core.ports import Runtime
from outreach.core.retry import backoff
from outreach.sending.messages import message_context
from outreach.store.consent import opted_out
from outreach.store.controls import PAUSE_RECHECK, paused_journeys
from outreach.store.models import Enrollment, ScheduledStep, StepState
from rules.caps import CAP_WINDOW, Send, allowed_time, counts_toward_caps
from rules.loader import JourneySet, LoadedJourney
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


@dataclass(frozen=True)
class Skip:
    """Not sending now, and what the step becomes. `fresh` is a newer version of the anchor
    resource than the one the step was planned from: the caller hands it to intake so the whole
    enrollment follows it."""

    reason: str
    state: StepState = StepState.SKIPPED
    retry_at: datetime | None = None
    fresh: dict[str, Any] | None = None
    counts: bool = True  # whether this counts as an attempt (a pause does not)


class _NotNow(Exception):
    """Raised by a check deep down; `check` turns it into the Skip it carries."""

    def __init__(self, reason: str, state: StepState = StepState.SKIPPED,
                 retry_at: datetime | None = None, fresh: dict[str, Any] | None = None,
                 *, counts: bool = True) -> None:
        super().__init__(reason)
        self.skip = Skip(reason, state, retry_at, fresh, counts)


def _journey(rt: Runtime, enrollment: Enrollment, step_id: str) -> tuple[LoadedJourney, Step]:
    journey = rt.journeys.by_name(enrollment.journey)
    if journey is None:
        raise _NotNow(f"journey {enrollment.journey} is no longer loaded", StepState.CANCELLED)
    spec = journey.step(step_id)
    if spec is None:
        raise _NotNow(f"step {step_id!r} is no longer in journey {journey.name}",
                      StepState.CANCELLED)
    return journey, spec


def read(rt: Runtime, reference: str, attempts: int) -> dict[str, Any]:
    if rt.ehr is None:
        raise _NotNow("no EHR configured to re-check against", StepState.FAILED)
    rtype, _, rid = reference.partition("/")
    try:
        return rt.ehr.read(rtype, rid)
    except FhirNotFound as exc:
        raise _NotNow(f"{reference} no longer exists", StepState.CANCELLED) from exc
    except FhirError as exc:
        # Cannot re-check (still booked? still reachable?): do not send blind, try later.
        raise _NotNow(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                   rt.clock.now() + backoff(attempts)) from exc


def _still_wanted(rt: Runtime, journey: LoadedJourney, enrollment: Enrollment,
                  resource: dict[str, Any]) -> None:
    now = rt.clock.now()
    reason = recheck(journey, resource, now)
    if reason is not None:
        state = StepState.CANCELLED if reason.startswith("cancel_when") else StepState.SKIPPED
        raise _NotNow(reason, state, fresh=resource)
    anchor = anchor_time(journey, resource, now)
    if journey.spec.anchor != TRIGGER_TIME and anchor != enrollment.anchor_at:
        # Back to scheduled: ingesting the fresh version re-plans it with the others.
        raise _NotNow("anchor moved", StepState.SCHEDULED, fresh=resource)


def _related_persons(rt: Runtime, patient: str) -> list[dict[str, Any]]:
    if rt.ehr is None:
        return []
    try:
        return list(rt.ehr.search("RelatedPerson", {"patient": patient, "_count": 50}))
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


def sent_recently(session: Session, patient: str, now: datetime, journeys: JourneySet,
                  exclude_step: int | None = None) -> list[Send]:
    """What the patient was actually sent in the last cap window (the send-time re-check counts
    only these: planned steps of other journeys do not hold this one back)."""
    query = (
        select(ScheduledStep.sent_at, ScheduledStep.channel, ScheduledStep.step_id,
               Enrollment.journey)
        .join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
        .where(Enrollment.patient == patient, ScheduledStep.state == StepState.SENT,
               ScheduledStep.sent_at >= now - CAP_WINDOW)
    )
    if exclude_step is not None:
        query = query.where(ScheduledStep.id != exclude_step)
    sends = []
    for at, channel, step_id, journey in session.execute(query):
        spec = journeys.step(journey, step_id)
        if at is not None:
            sends.append(Send(at, channel or "sms", spec is not None and spec.cap_exempt))
    return sends


def _not_now(rt: Runtime, journey: LoadedJourney, spec: Step, channel: str,
             sent: list[Send], zone: ZoneInfo) -> None:
    """Quiet hours and frequency caps, re-checked at send time: a retried or late step must not
    go out at night or past the cap. Deferrals do not count as attempts."""
    now = rt.clock.now()
    quiet = journey.spec.quiet_hours

    def adjust(moment: datetime) -> datetime:
        return shift_out_of_quiet_hours(moment, quiet, zone) if quiet else moment

    later = adjust(now)
    policy = rt.settings.cap_policy
    if counts_toward_caps([channel], spec.cap_exempt, policy):
        later = allowed_time(now, sent, zone, policy, adjust)
    if later > now + timedelta(minutes=1):
        why = "quiet hours" if later == adjust(now) else "frequency cap"
        raise _NotNow(f"{why}: deferred", StepState.SCHEDULED, later, counts=False)


def check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment) -> Ready | Skip:
    """Re-check what may have changed since the step was planned, then pick the first listed
    channel that is configured, not excluded by an earlier permanent failure, on which the
    recipient can be reached and has not opted out; then quiet hours and caps."""
    try:
        return _check(rt, step, enrollment)
    except _NotNow as not_now:
        return not_now.skip


def _check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment) -> Ready:
    journey, spec = _journey(rt, enrollment, step.step_id)
    resource = read(rt, enrollment.anchor_reference, step.attempts)
    _still_wanted(rt, journey, enrollment, resource)
    patient = read(rt, enrollment.patient, step.attempts)
    zone = patient_timezone(patient) or rt.settings.zone
    recipients = _recipients(rt, journey, spec, step, enrollment.patient, patient)
    # What our own records say, in one session: paused, opted out, already sent lately.
    with rt.sessions() as session:
        if enrollment.journey in paused_journeys(session):
            raise _NotNow("journey paused", StepState.SCHEDULED, rt.clock.now() + PAUSE_RECHECK,
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
            raise _NotNow(f"template: {exc}", StepState.FAILED) from exc
        message = OutboundMessage(key=step.uid, to=recipient.address, text=rendered.text,
                                  subject=rendered.subject, html=rendered.html)
        return Ready(recipient.channel, recipient.address, message, enrollment.patient,
                     enrollment.anchor_reference, spec.category)
    listed = ", ".join(spec.channel)
    detail = "; ".join(notes) or f"configured: {', '.join(sorted(rt.channels))}"
    if step.excluded_channels:
        detail += f"; failed before: {step.excluded_channels.replace(',', ', ')}"
    raise _NotNow(f"no channel the recipient can receive among [{listed}] ({detail})")
