"""Sending: the sweeper claims due steps; send_step reserves, re-checks, sends and records."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from channels import PermanentSendError, SendError, TransientSendError
from channels.twilio import UNSUBSCRIBED
from connector.writeback import SentMessage, build_communication
from outreach import writeback
from outreach.consent import set_opt_out
from outreach.ingest import ingest
from outreach.metrics import SENDS
from outreach.preconditions import Ready, Skip, check
from outreach.retry import backoff
from outreach.runtime import Runtime
from outreach.store.db import transaction
from outreach.store.models import DeliveryAttempt, ScheduledStep, StepState, Writeback

log = logging.getLogger(__name__)

WRITEBACK_LEASE = timedelta(minutes=2)
UNFINISHED = ("reserved", "unknown")  # attempts the provider may or may not have


@dataclass(frozen=True)
class SweepResult:
    step_ids: list[int]
    writeback_ids: list[int]


def _claim_steps(session: Session, rt: Runtime, now: datetime, batch: int) -> list[int]:
    settings = rt.settings
    due = select(ScheduledStep.id).where(
        ScheduledStep.state == StepState.SCHEDULED, ScheduledStep.due_at <= now
    ).order_by(ScheduledStep.due_at).limit(batch).with_for_update(skip_locked=True)
    # A queued step whose task never ran (lost message, broker restart), or a step whose
    # worker died while sending, is queued again; send_step's reservation makes a second
    # delivery of the same task harmless, and it reconciles an unfinished provider call first.
    lost = select(ScheduledStep.id).where(or_(
        (ScheduledStep.state == StepState.QUEUED)
        & (ScheduledStep.queued_at <= now - timedelta(seconds=settings.requeue_after_seconds)),
        (ScheduledStep.state == StepState.SENDING)
        & (ScheduledStep.updated_at <= now - timedelta(seconds=settings.send_lease_seconds)),
    )).limit(batch).with_for_update(skip_locked=True)
    step_ids = [*session.scalars(due), *session.scalars(lost)]
    if step_ids:
        session.execute(update(ScheduledStep).where(ScheduledStep.id.in_(step_ids)).values(
            state=StepState.QUEUED, queued_at=now, updated_at=now))
    return step_ids


def sweep(rt: Runtime, batch: int = 500) -> SweepResult:
    """Claim due steps and due write-backs, then enqueue them after the claim committed. The
    partial indexes keep this proportional to what is due, not to everything scheduled."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        step_ids = _claim_steps(session, rt, now, batch)
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
            due_at: datetime | None = None, *, excluded: str | None = None) -> SendOutcome:
    SENDS.labels(state).inc()
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        step = session.get_one(ScheduledStep, step_id)
        step.state, step.reason, step.updated_at = state, reason, now
        if due_at is not None:
            step.due_at = due_at
        if excluded is not None:
            step.excluded_channels = excluded
        if state == StepState.QUEUED:
            step.queued_at = now
    if state == StepState.QUEUED:
        rt.enqueue.send_steps([step_id])
    if state == StepState.SKIPPED:
        log.info("step %s skipped: %s", step_id, reason)
    return SendOutcome(step_id, state, reason)


def _record_attempt(rt: Runtime, step: ScheduledStep, ready: Ready) -> int:
    with transaction(rt.sessions) as session:
        attempt = DeliveryAttempt(step_id=step.id, attempt=step.attempts, channel=ready.channel,
                                  address=ready.to, state="reserved", started_at=rt.clock.now())
        session.add(attempt)
        session.flush()
        return attempt.id


def _unfinished_attempt(rt: Runtime, step_id: int) -> DeliveryAttempt | None:
    with rt.sessions() as session:
        return session.scalars(select(DeliveryAttempt).where(
            DeliveryAttempt.step_id == step_id, DeliveryAttempt.state.in_(UNFINISHED)
        ).order_by(DeliveryAttempt.id.desc())).first()


def _already_sent(rt: Runtime, step_id: int, ready: Ready) -> tuple[int, str] | None:
    """After a worker died (or the provider timed out) between calling the provider and
    recording the result, ask the provider whether it has the message before sending again."""
    previous = _unfinished_attempt(rt, step_id)
    if previous is None:
        return None
    channel = rt.channels.get(previous.channel)
    finder = getattr(channel, "find_sent", None)
    if finder is None or previous.address is None:
        return None  # this provider cannot tell us: at-least-once for this one attempt
    sid = finder(previous.address, ready.message.text, previous.started_at)
    if sid is None:
        with transaction(rt.sessions) as session:
            row = session.get_one(DeliveryAttempt, previous.id)
            row.state, row.error = "failed", "not found at the provider after a lost result"
        return None
    return previous.id, sid


def _failed(rt: Runtime, step: ScheduledStep, attempt_id: int, ready: Ready,
            exc: SendError) -> SendOutcome:
    now = rt.clock.now()
    ambiguous = isinstance(exc, TransientSendError) and exc.code == "timeout"
    with transaction(rt.sessions) as session:
        attempt = session.get_one(DeliveryAttempt, attempt_id)
        attempt.state, attempt.finished_at = ("unknown" if ambiguous else "failed"), now
        attempt.error, attempt.error_code = str(exc)[:500], exc.code
        if exc.code == UNSUBSCRIBED and ready.channel == "sms":
            set_opt_out(session, "sms", ready.to, True, source="provider", now=now,
                        patient=ready.patient)
    reason = f"{ready.channel}: {exc}" + (f" (code {exc.code})" if exc.code else "")
    if isinstance(exc, TransientSendError) and step.attempts < rt.settings.max_send_attempts:
        log.warning("step %s attempt %s failed, will retry: %s", step.id, step.attempts, exc)
        return _finish(rt, step.id, StepState.SCHEDULED, f"retrying: {reason}",
                       due_at=now + backoff(step.attempts))
    if isinstance(exc, PermanentSendError):
        excluded = ",".join(filter(None, [step.excluded_channels, ready.channel]))
        log.warning("step %s failed permanently on %s (code %s); trying a fallback", step.id,
                    ready.channel, exc.code)
        return _finish(rt, step.id, StepState.QUEUED, f"fallback after {reason}",
                       excluded=excluded)
    log.error("step %s failed: gave up after %s attempts", step.id, step.attempts)
    return _finish(rt, step.id, StepState.FAILED, f"gave up: {reason}")


def _sent(rt: Runtime, step: ScheduledStep, attempt_id: int, ready: Ready,
          provider_id: str | None) -> int:
    now = rt.clock.now()
    system = rt.settings.identifier_system
    communication = build_communication(SentMessage(
        identifier_system=system, identifier_value=step.uid, patient=ready.patient,
        about=ready.about, channel=ready.channel, category=ready.category, sent=now,
        text=ready.message.text, subject=ready.message.subject,
    ))
    with transaction(rt.sessions) as session:
        attempt = session.get_one(DeliveryAttempt, attempt_id)
        attempt.state, attempt.finished_at = "sent", now
        attempt.provider_message_id, attempt.provider_status = provider_id, "accepted"
        row = session.get_one(ScheduledStep, step.id)
        row.state, row.sent_at, row.channel, row.reason, row.updated_at = (
            StepState.SENT, now, ready.channel, None, now)
        return writeback.queue(session, communication, system, step.uid, now,
                               step_id=step.id).id


def send_step(rt: Runtime, step_id: int) -> SendOutcome:
    """Send one step at most once: reserve it (queued → sending) in its own transaction, re-check
    its preconditions, reconcile an unfinished earlier attempt, record the attempt, call the
    provider, then record the result and queue the Communication write-back."""
    with transaction(rt.sessions) as session:
        step = _reserve(session, step_id, rt.clock.now())
        if step is None:
            return SendOutcome(step_id, "not-queued", "already taken, cancelled or re-planned")
        enrollment = step.enrollment
        session.expunge_all()
    try:
        ready = check(rt, step, enrollment)
        found = _already_sent(rt, step_id, ready)
    except Skip as skip:
        outcome = _finish(rt, step_id, skip.state, skip.reason, skip.retry_at)
        if skip.fresh is not None:
            ingest(rt, skip.fresh, source="send-check")
        return outcome
    except TransientSendError as exc:
        return _finish(rt, step_id, StepState.SCHEDULED, f"retrying: {exc}",
                       due_at=rt.clock.now() + backoff(step.attempts))
    provider_id: str | None
    if found is not None:
        attempt_id, provider_id = found
        log.info("step %s was already at the provider (%s): recorded, not resent", step_id,
                 provider_id)
    else:
        attempt_id = _record_attempt(rt, step, ready)
        try:
            provider_id = rt.channels[ready.channel].send(ready.message).provider_message_id
        except SendError as exc:
            return _failed(rt, step, attempt_id, ready, exc)
    writeback_id = _sent(rt, step, attempt_id, ready, provider_id)
    rt.enqueue.write_back([writeback_id])
    SENDS.labels(StepState.SENT).inc()
    log.info("step %s sent on %s (provider id %s)", step_id, ready.channel, provider_id)
    return SendOutcome(step_id, StepState.SENT, None, ready.channel, ready.to)


def write_back(rt: Runtime, writeback_id: int) -> str:
    return writeback.write_back(rt, writeback_id)
