"""The sweeper: claim due steps and due write-backs, then enqueue them once the claim committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm import Session

from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import ScheduledStep, StepState, Writeback
from outreach.writeback.outbox import OFFER_LEASE

# A claimed write-back is offered again after this if its task never ran (its task takes a
# row due within it as due).
WRITEBACK_LEASE = OFFER_LEASE


@dataclass(frozen=True)
class SweepResult:
    step_ids: list[int]
    writeback_ids: list[int]


def _claim_statements(batch: int) -> tuple[Select[int], ...]:
    """The sweep's three claims (built once per batch size: the sweep runs every tick)."""
    found = _CLAIMS.get(batch)
    if found is None:
        due = select(ScheduledStep.id).where(
            ScheduledStep.state == StepState.SCHEDULED, ScheduledStep.due_at <= bindparam("now")
        ).order_by(ScheduledStep.due_at).limit(batch).with_for_update(skip_locked=True)
        # A queued step whose task never ran (lost message, broker restart), or a step whose
        # worker died while sending, is queued again; send_step's reservation makes a second
        # delivery of the same task harmless, and it reconciles an unfinished provider call
        # first. Two queries, not one OR: each then runs on its own partial index, and the
        # sweep stays proportional to the steps in those states (bench: sweeper, 1M steps).
        lost_queued = select(ScheduledStep.id).where(
            ScheduledStep.state == StepState.QUEUED,
            ScheduledStep.queued_at <= bindparam("queued_before"),
        ).limit(batch).with_for_update(skip_locked=True)
        lost_sending = select(ScheduledStep.id).where(
            ScheduledStep.state == StepState.SENDING,
            ScheduledStep.updated_at <= bindparam("sending_before"),
        ).limit(batch).with_for_update(skip_locked=True)
        found = _CLAIMS[batch] = (due, lost_queued, lost_sending)
    return found


_CLAIMS: dict[int, tuple[Select[int], ...]] = {}
_QUEUE = update(ScheduledStep).where(
    ScheduledStep.id.in_(bindparam("ids", expanding=True))
).values(state=StepState.QUEUED, queued_at=bindparam("now"), updated_at=bindparam("now"))


def _pending_statement(batch: int) -> Select[int]:
    """Due write-backs, claimed (built once per batch size, as the step claims)."""
    found = _PENDING.get(batch)
    if found is None:
        found = _PENDING[batch] = select(Writeback.id).where(
            Writeback.state == "pending", Writeback.next_attempt_at <= bindparam("now")
        ).limit(batch).with_for_update(skip_locked=True)
    return found


_PENDING: dict[int, Select[int]] = {}
_LEASE = update(Writeback).where(Writeback.id.in_(bindparam("ids", expanding=True))).values(
    next_attempt_at=bindparam("until"))


def _claim_steps(session: Session, rt: Runtime, now: datetime, batch: int) -> list[int]:
    settings = rt.settings
    params = {
        "now": now,
        "queued_before": now - timedelta(seconds=settings.requeue_after_seconds),
        "sending_before": now - timedelta(seconds=settings.send_lease_seconds),
    }
    connection = session.connection()
    step_ids = [step_id for claim in _claim_statements(batch)
                for step_id in connection.execute(claim, params).scalars()]
    if step_ids:
        connection.execute(_QUEUE, {"ids": step_ids, "now": now})
    return step_ids


def sweep_steps(rt: Runtime, batch: int = 500) -> list[int]:
    """The sweep's step claims alone, enqueued after they committed: for a run that writes
    nothing back (a forecast), where claiming write-backs would only claim rows it drops."""
    with transaction(rt.sessions) as session:
        step_ids = _claim_steps(session, rt, rt.clock.now(), batch)
    rt.enqueue.send_steps(step_ids)
    return step_ids


def sweep(rt: Runtime, batch: int = 500) -> SweepResult:
    """Claim due steps and due write-backs, then enqueue them after the claim committed. The
    partial indexes keep this proportional to what is due, not to everything scheduled."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        step_ids = _claim_steps(session, rt, now, batch)
        connection = session.connection()
        writeback_ids = list(connection.execute(_pending_statement(batch), {"now": now}).scalars())
        if writeback_ids:
            connection.execute(_LEASE, {"ids": writeback_ids, "until": now + WRITEBACK_LEASE})
    rt.enqueue.send_steps(step_ids)
    rt.enqueue.write_back(writeback_ids)
    return SweepResult(step_ids, writeback_ids)
