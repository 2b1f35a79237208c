"""What staff can do through the admin API, each write recorded in the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import (
    PENDING_STATES,
    AuditEntry,
    Enrollment,
    JourneyControl,
    ScheduledStep,
    StepState,
)
from outreach.writeback.communication_requests import queue_requests
from outreach.writeback.consent import record_choice

RESENDABLE = (StepState.FAILED, StepState.SKIPPED)


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


def audit(session: Session, rt: Runtime, actor: str, action: str, target: str,
          detail: dict[str, Any] | None = None) -> None:
    session.add(AuditEntry(at=rt.clock.now(), actor=actor, action=action, target=target,
                           detail=detail))


def set_paused(rt: Runtime, journey: str, paused: bool, actor: str) -> None:
    if rt.journeys.by_name(journey) is None:
        raise NotFound(f"no journey {journey!r} is loaded")
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        control = session.get(JourneyControl, journey, with_for_update=True)
        if control is None:
            session.add(JourneyControl(journey=journey, paused=paused, changed_at=now,
                                       changed_by=actor))
        else:
            control.paused, control.changed_at, control.changed_by = paused, now, actor
        audit(session, rt, actor, "pause" if paused else "resume", f"journey/{journey}")


def patient_enrollments(rt: Runtime, patient_id: str) -> list[Enrollment]:
    with rt.sessions() as session:
        enrollments = list(session.scalars(
            select(Enrollment).where(Enrollment.patient == f"Patient/{patient_id}")
            .options(selectinload(Enrollment.steps)).order_by(Enrollment.id)))
        session.expunge_all()
    if not enrollments:
        raise NotFound(f"no outreach for Patient/{patient_id}")
    return enrollments


def _step(session: Session, step_id: int) -> ScheduledStep:
    step = session.get(ScheduledStep, step_id, with_for_update=True)
    if step is None:
        raise NotFound(f"no step {step_id}")
    return step


def cancel_step(rt: Runtime, step_id: int, actor: str) -> ScheduledStep:
    with transaction(rt.sessions) as session:
        step = _step(session, step_id)
        if step.state not in PENDING_STATES:
            raise Conflict(f"step {step_id} is {step.state}: only scheduled or queued steps "
                           "can be cancelled")
        step.state, step.reason, step.updated_at = (
            StepState.CANCELLED, f"cancelled by {actor}", rt.clock.now())
        audit(session, rt, actor, "cancel-step", f"step/{step_id}")
        ids = _sync_request(session, rt, step)
    rt.enqueue.write_back(ids)
    return step


def _sync_request(session: Session, rt: Runtime, step: ScheduledStep) -> list[int]:
    session.flush()
    return queue_requests(session, rt.settings.identifier_system, rt.journeys, step.enrollment,
                          [step], rt.clock.now())


def resend_step(rt: Runtime, step_id: int, actor: str) -> ScheduledStep:
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        step = _step(session, step_id)
        if step.state not in RESENDABLE:
            raise Conflict(f"step {step_id} is {step.state}: only failed or skipped steps can "
                           "be sent again")
        step.state, step.reason, step.queued_at, step.updated_at = (
            StepState.QUEUED, f"re-sent by {actor}", now, now)
        step.excluded_channels = ""
        audit(session, rt, actor, "resend-step", f"step/{step_id}")
        ids = _sync_request(session, rt, step)
    rt.enqueue.write_back(ids)
    rt.enqueue.send_steps([step_id])
    return step


def set_consent(rt: Runtime, patient_id: str, channel: str, address: str, opted_out: bool,
                actor: str) -> bool:
    with transaction(rt.sessions) as session:
        changed, ids = record_choice(session, rt.settings.identifier_system, channel, address,
                                     opted_out, source="staff", now=rt.clock.now(),
                                     patient=f"Patient/{patient_id}")
        audit(session, rt, actor, "opt-out" if opted_out else "opt-in",
              f"Patient/{patient_id}", {"channel": channel, "changed": changed})
    rt.enqueue.write_back(ids)
    return changed
