"""Sending: the sweeper claims due steps; send_step reserves, re-checks, sends and records."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels import OutboundMessage, PermanentSendError, SendError, TransientSendError
from channels.templates import TemplateError
from connector.errors import FhirError, FhirNotFound
from connector.writeback import SentMessage, build_communication, identifier_query
from outreach.ingest import ingest
from outreach.messages import message_context
from outreach.metrics import SENDS, WRITEBACKS
from outreach.runtime import Runtime
from outreach.store.db import transaction
from outreach.store.models import (
    DeliveryAttempt,
    Enrollment,
    ScheduledStep,
    StepState,
    Writeback,
)
from rules.loader import LoadedJourney
from rules.planner import anchor_time
from rules.recipients import contact_for, preferred_language
from rules.schema import TRIGGER_TIME, Step

log = logging.getLogger(__name__)

REQUEUE_AFTER = timedelta(minutes=10)
WRITEBACK_LEASE = timedelta(minutes=2)


def backoff(attempt: int, base: float = 30.0, cap: float = 3600.0) -> timedelta:
    """Exponential with ±20% jitter, so a fleet of retries does not arrive in lockstep."""
    seconds = min(cap, base * 2 ** max(0, attempt - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class SweepResult:
    step_ids: list[int]
    writeback_ids: list[int]


def sweep(rt: Runtime, batch: int = 500) -> SweepResult:
    """Claim due steps and due write-backs, then enqueue them after the claim committed. The
    partial indexes keep this proportional to what is due, not to everything scheduled."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        due = select(ScheduledStep.id).where(
            ScheduledStep.state == StepState.SCHEDULED, ScheduledStep.due_at <= now
        ).order_by(ScheduledStep.due_at).limit(batch).with_for_update(skip_locked=True)
        # A queued step whose task never ran (lost message, broker restart) is queued again;
        # the reservation in send_step makes a second delivery of the same task harmless.
        lost = select(ScheduledStep.id).where(
            ScheduledStep.state == StepState.QUEUED, ScheduledStep.queued_at <= now - REQUEUE_AFTER
        ).limit(batch).with_for_update(skip_locked=True)
        step_ids = [*session.scalars(due), *session.scalars(lost)]
        if step_ids:
            session.execute(update(ScheduledStep).where(ScheduledStep.id.in_(step_ids)).values(
                state=StepState.QUEUED, queued_at=now, updated_at=now))
        pending = select(Writeback.id).where(
            Writeback.state == "pending", Writeback.next_attempt_at <= now
        ).limit(batch).with_for_update(skip_locked=True)
        writeback_ids = list(session.scalars(pending))
        if writeback_ids:
            session.execute(update(Writeback).where(Writeback.id.in_(writeback_ids)).values(
                next_attempt_at=now + WRITEBACK_LEASE))
    rt.enqueue.send_steps(step_ids)
    rt.enqueue.write_back(writeback_ids)
    return SweepResult(step_ids, writeback_ids)


@dataclass(frozen=True)
class SendOutcome:
    step_id: int
    state: str
    reason: str | None = None
    channel: str | None = None
    to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step_id": self.step_id, "state": self.state, "reason": self.reason,
                "channel": self.channel}


def _reserve(session: Session, step_id: int, now: datetime) -> ScheduledStep | None:
    """Atomically move queued → sending; a duplicate task or a cancelled step gets nothing."""
    result = session.execute(update(ScheduledStep).where(
        ScheduledStep.id == step_id, ScheduledStep.state == StepState.QUEUED
    ).values(state=StepState.SENDING, attempts=ScheduledStep.attempts + 1, updated_at=now))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return None
    return session.get(ScheduledStep, step_id)


def _finish(rt: Runtime, step_id: int, state: StepState, reason: str | None,
            due_at: datetime | None = None) -> SendOutcome:
    SENDS.labels(state).inc()
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        step = session.get_one(ScheduledStep, step_id)
        step.state, step.reason, step.updated_at = state, reason, now
        if due_at is not None:
            step.due_at = due_at
    if state == StepState.SKIPPED:
        log.info("step %s skipped: %s", step_id, reason)
    return SendOutcome(step_id, state, reason)


@dataclass(frozen=True)
class _Ready:
    """Everything needed to send, gathered before the provider is called."""

    channel: str
    to: str
    message: OutboundMessage
    patient: str
    about: str
    category: str


class _Skip(Exception):
    """Not sending now. `fresh` is a newer version of the anchor resource than the one the step
    was planned from: it is ingested afterwards so the whole enrollment follows it."""

    def __init__(self, reason: str, state: StepState = StepState.SKIPPED,
                 retry_at: datetime | None = None, fresh: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.state, self.retry_at, self.fresh = reason, state, retry_at, fresh


def _step_spec(journey: LoadedJourney, step_id: str) -> Step:
    spec = next((s for s in journey.spec.steps if s.id == step_id), None)
    if spec is None:
        raise _Skip(f"step {step_id!r} is no longer in journey {journey.name}", StepState.CANCELLED)
    return spec


def _read(rt: Runtime, reference: str, attempts: int) -> dict[str, Any]:
    if rt.ehr is None:
        raise _Skip("no EHR configured to re-check against", StepState.FAILED)
    rtype, _, rid = reference.partition("/")
    try:
        return rt.ehr.read(rtype, rid)
    except FhirNotFound as exc:
        raise _Skip(f"{reference} no longer exists", StepState.CANCELLED) from exc
    except FhirError as exc:
        raise _Skip(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                    rt.clock.now() + backoff(attempts)) from exc


def _check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment) -> _Ready:
    """Re-check, right before sending, what may have changed since the step was planned."""
    journey = rt.journeys.by_name(enrollment.journey)
    if journey is None:
        raise _Skip(f"journey {enrollment.journey} is no longer loaded", StepState.CANCELLED)
    spec = _step_spec(journey, step.step_id)
    now = rt.clock.now()
    resource = _read(rt, enrollment.anchor_reference, step.attempts)
    if journey.cancel_when is not None and journey.cancel_when(resource, now):
        raise _Skip(f"cancel_when matched: {journey.cancel_when.source}", StepState.CANCELLED,
                    fresh=resource)
    if journey.when is not None and not journey.when(resource, now):
        raise _Skip("trigger condition no longer true", fresh=resource)
    anchor = anchor_time(journey, resource, now)
    if journey.spec.anchor != TRIGGER_TIME and anchor != enrollment.anchor_at:
        # Back to scheduled: ingesting the fresh version re-plans it with the others.
        raise _Skip("anchor moved", StepState.SCHEDULED, fresh=resource)
    patient = _read(rt, enrollment.patient, step.attempts)
    language = preferred_language(patient)
    for channel in spec.channel:
        to = contact_for(patient, channel, now) if channel in rt.channels else None
        if to is None:
            continue
        context = message_context(rt.settings, patient, resource, enrollment.anchor_at,
                                  rt.settings.zone, language)
        try:
            rendered = rt.templates.render(spec.template, channel, context, language)
        except TemplateError as exc:
            raise _Skip(f"template: {exc}", StepState.FAILED) from exc
        message = OutboundMessage(key=step.uid, to=to, text=rendered.text,
                                  subject=rendered.subject, html=rendered.html)
        return _Ready(channel, to, message, enrollment.patient, enrollment.anchor_reference,
                      spec.category)
    listed = ", ".join(spec.channel)
    raise _Skip(f"no channel the patient can receive among [{listed}] (configured: "
                f"{', '.join(sorted(rt.channels))})")


def _record_attempt(rt: Runtime, step_id: int, attempt_no: int, channel: str) -> int:
    with transaction(rt.sessions) as session:
        attempt = DeliveryAttempt(step_id=step_id, attempt=attempt_no, channel=channel,
                                  state="reserved", started_at=rt.clock.now())
        session.add(attempt)
        session.flush()
        return attempt.id


def _failed(rt: Runtime, step: ScheduledStep, attempt_id: int, exc: SendError) -> SendOutcome:
    now = rt.clock.now()
    retry = isinstance(exc, TransientSendError) and step.attempts < rt.settings.max_send_attempts
    with transaction(rt.sessions) as session:
        attempt = session.get_one(DeliveryAttempt, attempt_id)
        attempt.state, attempt.finished_at = "failed", now
        attempt.error = f"{exc} (code {exc.code})" if exc.code else str(exc)
    if retry:
        log.warning("step %s attempt %s failed, will retry: %s", step.id, step.attempts, exc)
        return _finish(rt, step.id, StepState.SCHEDULED, f"retrying: {exc}",
                       due_at=now + backoff(step.attempts))
    kind = "permanent" if isinstance(exc, PermanentSendError) else "gave up"
    log.error("step %s failed (%s): %s", step.id, kind, exc)
    return _finish(rt, step.id, StepState.FAILED, f"{kind}: {attempt.error}")


def _sent(rt: Runtime, step: ScheduledStep, attempt_id: int, ready: _Ready,
          provider_id: str | None) -> int:
    now = rt.clock.now()
    communication = build_communication(SentMessage(
        identifier_system=rt.settings.identifier_system, identifier_value=step.uid,
        patient=ready.patient, about=ready.about, channel=ready.channel,
        category=ready.category, sent=now, text=ready.message.text,
        subject=ready.message.subject,
    ))
    with transaction(rt.sessions) as session:
        attempt = session.get_one(DeliveryAttempt, attempt_id)
        attempt.state, attempt.finished_at = "sent", now
        attempt.provider_message_id = provider_id
        row = session.get_one(ScheduledStep, step.id)
        row.state, row.sent_at, row.channel, row.reason, row.updated_at = (
            StepState.SENT, now, ready.channel, None, now)
        writeback = Writeback(
            step_id=step.id, resource_type="Communication",
            identifier=f"{rt.settings.identifier_system}|{step.uid}", resource=communication,
            state="pending", attempts=0, next_attempt_at=now, created_at=now)
        session.add(writeback)
        session.flush()
        return writeback.id


def send_step(rt: Runtime, step_id: int) -> SendOutcome:
    """Send one step at most once: reserve it (queued → sending) in its own transaction, re-check
    its preconditions, record the attempt, call the provider, then record the result and queue
    the Communication write-back."""
    with transaction(rt.sessions) as session:
        step = _reserve(session, step_id, rt.clock.now())
        if step is None:
            return SendOutcome(step_id, "not-queued", "already taken, cancelled or re-planned")
        enrollment = step.enrollment
        session.expunge_all()
    try:
        ready = _check(rt, step, enrollment)
    except _Skip as skip:
        outcome = _finish(rt, step_id, skip.state, skip.reason, skip.retry_at)
        if skip.fresh is not None:
            ingest(rt, skip.fresh, source="send-check")
        return outcome
    attempt_id = _record_attempt(rt, step_id, step.attempts, ready.channel)
    try:
        receipt = rt.channels[ready.channel].send(ready.message)
    except SendError as exc:
        return _failed(rt, step, attempt_id, exc)
    writeback_id = _sent(rt, step, attempt_id, ready, receipt.provider_message_id)
    rt.enqueue.write_back([writeback_id])
    SENDS.labels(StepState.SENT).inc()
    log.info("step %s sent on %s (provider id %s)", step_id, ready.channel,
             receipt.provider_message_id)
    return SendOutcome(step_id, StepState.SENT, None, ready.channel, ready.to)


def write_back(rt: Runtime, writeback_id: int) -> str:
    """Create the resource in the EHR with If-None-Exist; an EHR that is down leaves the row
    pending with a later next_attempt_at, and the sweeper offers it again."""
    with transaction(rt.sessions) as session:
        row = session.get(Writeback, writeback_id)
        if row is None or row.state == "done":
            return "done"
        resource, identifier, attempts = row.resource, row.identifier, row.attempts
    system, _, value = identifier.partition("|")
    now = rt.clock.now()
    try:
        if rt.writeback_target is None:
            raise FhirError("no EHR configured for write-back")
        created, _ = rt.writeback_target.create(
            resource, if_none_exist=identifier_query(system, value))
    except FhirError as exc:
        with transaction(rt.sessions) as session:
            row = session.get_one(Writeback, writeback_id)
            row.attempts, row.last_error = attempts + 1, str(exc)[:1000]
            row.next_attempt_at = now + backoff(attempts + 1, base=15)
        WRITEBACKS.labels("retry").inc()
        log.warning("write-back %s failed (attempt %s): %s", writeback_id, attempts + 1,
                    exc.status or type(exc).__name__)
        return "retry"
    with transaction(rt.sessions) as session:
        row = session.get_one(Writeback, writeback_id)
        row.state, row.server_id, row.done_at = "done", created.get("id"), now
        row.attempts = attempts + 1
    WRITEBACKS.labels("done").inc()
    return "done"
