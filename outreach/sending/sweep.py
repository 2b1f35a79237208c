"""The sweeper: claim due steps and due write-backs, then enqueue them once the claim committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import ScheduledStep, StepState, Writeback

# A claimed write-back is offered again after this if its task never ran.
WRITEBACK_LEASE = timedelta(minutes=2)


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
    # Two queries, not one OR: each then runs on its own partial index, and the sweep stays
    # proportional to the steps in those states (bench: sweeper, 1M steps scheduled).
    lost_queued = select(ScheduledStep.id).where(
        ScheduledStep.state == StepState.QUEUED,
        ScheduledStep.queued_at <= now - timedelta(seconds=settings.requeue_after_seconds),
    ).limit(batch).with_for_update(skip_locked=True)
    lost_sending = select(ScheduledStep.id).where(
        ScheduledStep.state == StepState.SENDING,
        ScheduledStep.updated_at <= now - timedelta(seconds=settings.send_lease_seconds),
    ).limit(batch).with_for_update(skip_locked=True)
    step_ids = [*session.scalars(due), *session.scalars(lost_queued),
                *session.scalars(lost_sending)]
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
