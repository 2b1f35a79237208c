"""send_step: re-check a due step, reserve it, call the provider once, record the result and
queue its write-back. A newer version of the resource found on the way is returned, not
ingested: the task layer hands it to intake."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, insert, inspect, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import joinedload

from channels import PermanentSendError, SendError, TransientSendError
from channels.segments import sms_segments
from channels.twilio import UNSUBSCRIBED
from connector.writeback import SentMessage, build_communication, request_identifier
from outreach.core.metrics import SENDS
from outreach.core.ports import Enqueuer, Runtime
from outreach.core.retry import backoff
from outreach.sending.checks import Ahead, Ready, Skip, check, look_ahead
from outreach.store.db import holding_reads, reads, transaction
from outreach.store.models import DeliveryAttempt, Enrollment, ScheduledStep, StepState
from outreach.writeback import delivery_status, outbox
from outreach.writeback.communication_requests import queue_requests, sent_request_row
from outreach.writeback.consent import record_choice

log = logging.getLogger(__name__)

UNFINISHED = ("reserved", "unknown")  # attempts the provider may or may not have


@dataclass(frozen=True)
class SendOutcome:
    step_id: int
    state: str
    reason: str | None = None
    channel: str | None = None
    to: str | None = None
    writeback_ids: tuple[int, ...] = ()  # the outbox rows this send queued
    # A newer version of the anchor resource than the step was planned from, for intake.
    fresh: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step_id": self.step_id, "state": self.state, "reason": self.reason,
                "channel": self.channel}


# Built once: every send runs these, and building a statement (and its cache key) cost more
# than running it. They run on the session's connection, outside the ORM's bookkeeping.
_STEP_COLUMNS = tuple(a.key for a in inspect(ScheduledStep).column_attrs)
_ENROLLMENT_COLUMNS = tuple(a.key for a in inspect(Enrollment).column_attrs)
_SNAPSHOT_ROWS = select(
    *(getattr(ScheduledStep, key).label(f"step_{key}") for key in _STEP_COLUMNS),
    *(getattr(Enrollment, key).label(f"enrollment_{key}") for key in _ENROLLMENT_COLUMNS),
).join_from(ScheduledStep, Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
_SNAPSHOT = _SNAPSHOT_ROWS.where(ScheduledStep.id == bindparam("step"))
_SNAPSHOTS = _SNAPSHOT_ROWS.where(ScheduledStep.id.in_(bindparam("steps", expanding=True)))


def _queued_step(row: Row[Any]) -> ScheduledStep | None:
    """Every column of the step and its enrollment, as objects outside any session; None
    unless the step is still queued (only then is it worth checking)."""
    if row.step_state != StepState.QUEUED:
        return None
    found = row._mapping
    step = ScheduledStep(**{key: found[f"step_{key}"] for key in _STEP_COLUMNS})
    step.enrollment = Enrollment(**{key: found[f"enrollment_{key}"]
                                    for key in _ENROLLMENT_COLUMNS})
    return step


def _snapshot(rt: Runtime, step_id: int) -> ScheduledStep | None:
    """The step and its enrollment as they are now, read without locking: the re-checks run
    against this."""
    with reads(rt.sessions) as connection:
        row = connection.execute(_SNAPSHOT, {"step": step_id}).first()
    return None if row is None else _queued_step(row)


def _snapshots(rt: Runtime, step_ids: list[int]) -> dict[int, ScheduledStep]:
    """A chunk's steps still queued, with their enrollments, in one query (as `_snapshot`)."""
    with reads(rt.sessions) as connection:
        rows = connection.execute(_SNAPSHOTS, {"steps": step_ids}).all()
    return {step.id: step for row in rows if (step := _queued_step(row)) is not None}


def _finish(rt: Runtime, step_id: int, state: StepState, reason: str | None,
            due_at: datetime | None = None, *, from_state: StepState = StepState.SENDING,
            excluded: str | None = None, counts: bool = True) -> SendOutcome:
    """Move the step out of `from_state`; a step that has moved on meanwhile is left alone."""
    now = rt.clock.now()
    values: dict[str, Any] = {"state": state, "reason": reason, "updated_at": now}
    if from_state == StepState.QUEUED and counts:  # checked, never reserved: still an attempt
        values["attempts"] = ScheduledStep.attempts + 1
    if due_at is not None:
        values["due_at"] = due_at
    if excluded is not None:
        values["excluded_channels"] = excluded
    if state == StepState.QUEUED:
        values["queued_at"] = now
    with transaction(rt.sessions) as session:
        result = session.execute(update(ScheduledStep).where(
            ScheduledStep.id == step_id, ScheduledStep.state == from_state).values(**values))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return SendOutcome(step_id, "not-queued", "taken, cancelled or re-planned meanwhile")
    if state in (StepState.SKIPPED, StepState.FAILED, StepState.CANCELLED):
        _revoke_request(rt, step_id, now)
    SENDS.labels(state).inc()
    if state == StepState.QUEUED:
        rt.enqueue.send_steps([step_id])
    if state == StepState.SKIPPED:
        log.info("step %s skipped: %s", step_id, reason)
    return SendOutcome(step_id, state, reason)


def _revoke_request(rt: Runtime, step_id: int, now: datetime) -> None:
    """The step will not be sent: its CommunicationRequest in the EHR says so, with the reason."""
    with transaction(rt.sessions) as session:
        step = session.get_one(ScheduledStep, step_id,
                               options=[joinedload(ScheduledStep.enrollment)])
        ids = queue_requests(session, rt.settings.identifier_system, rt.journeys,
                             step.enrollment, [step], now)
    rt.enqueue.write_back(ids)


# Built once, as _SNAPSHOT.
_TO_SENDING = update(ScheduledStep).where(
    ScheduledStep.id == bindparam("step"), ScheduledStep.state == StepState.QUEUED
).values(state=StepState.SENDING, attempts=ScheduledStep.attempts + 1,
         updated_at=bindparam("now")).returning(ScheduledStep.attempts)
_UNFINISHED = select(DeliveryAttempt.id).where(
    DeliveryAttempt.step_id == bindparam("step"), DeliveryAttempt.state.in_(UNFINISHED)
).order_by(DeliveryAttempt.id.desc()).limit(1)
_NEW_ATTEMPT = insert(DeliveryAttempt).returning(DeliveryAttempt.id)
_ATTEMPT_SENT = update(DeliveryAttempt).where(DeliveryAttempt.id == bindparam("attempt_id")).values(
    state="sent", finished_at=bindparam("now"), provider_message_id=bindparam("provider_id"),
    provider_status="accepted")
_STEP_SENT = update(ScheduledStep).where(ScheduledStep.id == bindparam("step")).values(
    state=StepState.SENT, sent_at=bindparam("now"), channel=bindparam("sent_on"), reason=None,
    updated_at=bindparam("now")).returning(ScheduledStep.due_at)


@dataclass(frozen=True)
class _Reservation:
    attempt_id: int | None  # the attempt row written before the provider call
    unfinished: DeliveryAttempt | None  # an earlier attempt whose result was lost


# Postgres: the reservation of a first attempt in one statement, committed on its own (no
# BEGIN, no COMMIT round trips): queued → sending, and the attempt row where that counted the
# first attempt. A later attempt looks for an earlier one first (`_reserve`, below).
_RESERVED = _TO_SENDING.cte("reserved")
_ATTEMPT_COLUMNS = ("step_id", "attempt", "channel", "address", "state", "started_at",
                    "language", "segments", "variant")
_ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
_FIRST_ATTEMPT = pg_insert(_ATTEMPTS).from_select(
    _ATTEMPT_COLUMNS,
    select(*(bindparam(f"new_{name}", type_=_ATTEMPTS.c[name].type)
             for name in _ATTEMPT_COLUMNS)
           ).where(_RESERVED.c.attempts == 1),
).returning(DeliveryAttempt.id).cte("first_attempt")
_RESERVE_FIRST = select(_RESERVED.c.attempts,
                        select(_FIRST_ATTEMPT.c.id).scalar_subquery().label("attempt_id"))


def _reserve(rt: Runtime, step: ScheduledStep, ready: Ready) -> _Reservation | None:
    """Committed before the provider is called: queued → sending (a duplicate task gets
    nothing) and the attempt row naming the channel and address. A first attempt is one
    statement on Postgres; a later one, after its step moved to sending, looks for an earlier
    attempt whose result was lost (a crash between the two leaves the step sending without a
    new attempt: the sweeper queues it again, and no provider was called)."""
    now = rt.clock.now()
    if rt.engine.dialect.name == "postgresql":
        with reads(rt.sessions) as connection:  # autocommit: the statement commits itself
            attempt = _new_attempt(step, ready, now)
            found = connection.execute(_RESERVE_FIRST, {
                "step": step.id, "now": now, **{f"new_{k}": v for k, v in attempt.items()}}
            ).first()
        if found is None:
            return None
        if found.attempt_id is not None:
            return _Reservation(found.attempt_id, None)
        return _later_attempt(rt, step, ready, now)
    with transaction(rt.sessions) as session:
        connection = session.connection()
        attempts = connection.execute(_TO_SENDING, {"step": step.id, "now": now}).scalar()
        if attempts is None:
            return None
        if attempts == 1:  # every reservation counts one: the first has no earlier attempt
            new = connection.execute(_NEW_ATTEMPT, _new_attempt(step, ready, now))
            return _Reservation(new.scalar_one(), None)
    return _later_attempt(rt, step, ready, now)


def _later_attempt(rt: Runtime, step: ScheduledStep, ready: Ready,
                   now: datetime) -> _Reservation:
    """The step is ours (sending): an earlier attempt whose result was lost, or a new one."""
    with transaction(rt.sessions) as session:
        connection = session.connection()
        unfinished_id = connection.execute(_UNFINISHED, {"step": step.id}).scalar()
        if unfinished_id is not None:
            unfinished = session.get_one(DeliveryAttempt, unfinished_id)
            session.expunge(unfinished)
            return _Reservation(None, unfinished)
        attempt_id = connection.execute(_NEW_ATTEMPT, _new_attempt(step, ready, now)).scalar_one()
        return _Reservation(attempt_id, None)


def _new_attempt(step: ScheduledStep, ready: Ready, now: datetime) -> dict[str, Any]:
    """The attempt row, written before the provider is called; with the message's language and
    its SMS segments (what the carrier bills), for the outcome reports."""
    segments = sms_segments(ready.message.text) if ready.channel == "sms" else None
    return {"step_id": step.id, "attempt": step.attempts + 1, "channel": ready.channel,
            "address": ready.to, "state": "reserved", "started_at": now,
            "language": ready.language, "segments": segments, "variant": ready.variant}


def _reconcile(rt: Runtime, step: ScheduledStep, ready: Ready,
               previous: DeliveryAttempt) -> tuple[int, str | None]:
    """After a worker died (or the provider timed out) between calling the provider and
    recording the result, ask the provider whether it has the message before sending again.
    Returns (attempt id, provider id if it was already sent)."""
    channel = rt.channels.get(previous.channel)
    finder = getattr(channel, "find_sent", None)
    sid = None
    if finder is not None and previous.address is not None:
        sid = finder(previous.address, ready.message.text, previous.started_at)
    if sid is not None:
        return previous.id, sid
    # Not at the provider (or it cannot tell us: at-least-once for this one attempt).
    with transaction(rt.sessions) as session:
        row = session.get_one(DeliveryAttempt, previous.id)
        row.state, row.error = "failed", "result lost; not found at the provider"
        session.flush()
        attempt = _new_attempt(step, ready, rt.clock.now())
        return session.connection().execute(_NEW_ATTEMPT, attempt).scalar_one(), None


def _failed(rt: Runtime, step: ScheduledStep, attempt_id: int, ready: Ready,
            exc: SendError) -> SendOutcome:
    now = rt.clock.now()
    attempts = step.attempts + 1
    ambiguous = isinstance(exc, TransientSendError) and exc.code == "timeout"
    consents: list[int] = []
    with transaction(rt.sessions) as session:
        attempt = session.get_one(DeliveryAttempt, attempt_id)
        attempt.state, attempt.finished_at = ("unknown" if ambiguous else "failed"), now
        attempt.error, attempt.error_code = str(exc)[:500], exc.code
        if exc.code == UNSUBSCRIBED and ready.channel == "sms":
            _, consents = record_choice(session, rt.settings.identifier_system, "sms", ready.to,
                                        True, source="provider", now=now, patient=ready.patient)
    rt.enqueue.write_back(consents)
    reason = f"{ready.channel}: {exc}" + (f" (code {exc.code})" if exc.code else "")
    if isinstance(exc, TransientSendError) and attempts < rt.settings.max_send_attempts:
        log.warning("step %s attempt %s failed, will retry: %s", step.id, attempts, exc)
        return _finish(rt, step.id, StepState.SCHEDULED, f"retrying: {reason}",
                       due_at=now + backoff(attempts))
    if isinstance(exc, PermanentSendError):
        excluded = ",".join(filter(None, [step.excluded_channels, ready.channel]))
        log.warning("step %s failed permanently on %s (code %s); trying a fallback", step.id,
                    ready.channel, exc.code)
        return _finish(rt, step.id, StepState.QUEUED, f"fallback after {reason}",
                       excluded=excluded)
    log.error("step %s failed: gave up after %s attempts", step.id, attempts)
    return _finish(rt, step.id, StepState.FAILED, f"gave up: {reason}")


# Postgres: the record of a send in one statement, committed on its own (no BEGIN, no COMMIT
# round trips, one statement instead of five): the attempt and the step marked sent, the
# Communication's outbox row added and the CommunicationRequest's refreshed (completed, due when
# the step now stands: the reservation holds it, but a re-plan that read it just before may have
# moved it), and a delivery status that came before the send taken. All of it or none of it.
_RECORD_SENT = text("""
WITH a AS (
    UPDATE delivery_attempts SET state = 'sent', finished_at = :now,
           provider_message_id = :provider_id, provider_status = 'accepted'
    WHERE id = :attempt_id),
s AS (
    UPDATE scheduled_steps SET state = 'sent', sent_at = :now, channel = :sent_on,
           reason = NULL, updated_at = :now
    WHERE id = :step RETURNING due_at),
r AS (SELECT CAST(:request AS jsonb) AS row),
w AS (
    INSERT INTO writebacks (step_id, resource_type, identifier, resource, operation, state,
                            attempts, next_attempt_at, created_at)
    SELECT :step, 'Communication', :identifier, CAST(:communication AS jsonb), 'create',
           'pending', 0, :now, :now
    UNION ALL
    SELECT NULL, r.row ->> 'resource_type', r.row ->> 'identifier',
           jsonb_set(r.row -> 'resource', '{occurrenceDateTime}', to_jsonb(to_char(
               s.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))),
           'upsert', 'pending', 0, :now, :now
    FROM s, r
    ON CONFLICT (identifier) DO UPDATE SET resource = excluded.resource,
        operation = excluded.operation, state = 'pending',
        next_attempt_at = excluded.next_attempt_at
    RETURNING id, resource_type),
e AS (DELETE FROM early_statuses WHERE provider_message_id = :provider_id
      RETURNING status, error_code)
SELECT (SELECT id FROM w WHERE resource_type = 'Communication') AS communication,
       (SELECT id FROM w WHERE resource_type <> 'Communication') AS request,
       (SELECT status FROM e) AS early_status, (SELECT error_code FROM e) AS early_code""")


def _sent(rt: Runtime, step: ScheduledStep, attempt_id: int, ready: Ready,
          provider_id: str | None) -> tuple[list[int], tuple[str, str | None] | None]:
    """Record the send; returns the outbox rows to write (the Communication first, then its
    CommunicationRequest marked completed) and a delivery status that came before the send."""
    now = rt.clock.now()
    system = rt.settings.identifier_system
    communication = build_communication(SentMessage(
        identifier_system=system, identifier_value=step.uid, patient=ready.patient,
        about=ready.about, channel=ready.channel, category=ready.category, sent=now,
        text=ready.message.text, subject=ready.message.subject,
        based_on=request_identifier(step.uid),
    ))
    if rt.engine.dialect.name == "postgresql":
        with reads(rt.sessions) as connection:  # autocommit: the statement commits itself
            found = connection.execute(_RECORD_SENT, {
                "attempt_id": attempt_id, "now": now, "provider_id": provider_id,
                "step": step.id, "sent_on": ready.channel,
                "identifier": f"{system}|{step.uid}", "communication": json.dumps(communication),
                "request": sent_request_row(system, rt.journeys, step.enrollment, step.uid,
                                            step.step_id, step.due_at, now),
            }).one()
        early = None if found.early_status is None else (found.early_status, found.early_code)
        return [i for i in (found.communication, found.request) if i is not None], early
    # The step as it now stands, for its CommunicationRequest (the reservation holds it:
    # nothing else changed it since the snapshot but the due time a re-plan may move).
    row = ScheduledStep(id=step.id, uid=step.uid, step_id=step.step_id, due_at=step.due_at,
                        state=StepState.SENT, reason=None)
    with transaction(rt.sessions) as session:
        connection = session.connection()
        connection.execute(_ATTEMPT_SENT, {"attempt_id": attempt_id, "now": now,
                                           "provider_id": provider_id})
        row.due_at = connection.execute(_STEP_SENT, {"step": step.id, "now": now,
                                                     "sent_on": ready.channel}).scalar_one()
        request_ids = queue_requests(session, system, rt.journeys, step.enrollment, [row], now)
        ids = [outbox.put(session, communication, system, step.uid, now, step_id=step.id,
                          known_new=True), *request_ids]
        # In this transaction, not one of its own: a status callback that beat this record.
        early = None if provider_id is None else delivery_status.take_early(session, provider_id)
        return ids, early


def send_step(rt: Runtime, step_id: int) -> SendOutcome:
    """Send one step at most once. Read it, re-check its preconditions against the EHR, then in
    one committed transaction reserve it (queued → sending) and record the attempt; only then
    call the provider; then record the result and queue the Communication write-back. A step
    whose earlier attempt lost its result is reconciled with the provider before any resend."""
    step = _snapshot(rt, step_id)
    if step is None:
        return SendOutcome(step_id, "not-queued", "already taken, cancelled or re-planned")
    return _send(rt, step, None)


@dataclass
class _HeldWritebacks:
    """A chunk's enqueuer: a fallback step goes out at once, write-backs wait for the chunk's
    end and are handed over in one call (the write-back side writes them together)."""

    enqueue: Enqueuer
    writebacks: list[int] = field(default_factory=list)

    def send_steps(self, step_ids: list[int]) -> None:
        self.enqueue.send_steps(step_ids)

    def write_back(self, writeback_ids: list[int]) -> None:
        self.writebacks.extend(writeback_ids)

    def poll(self) -> None:
        self.enqueue.poll()


def send_steps(rt: Runtime, step_ids: list[int]) -> list[SendOutcome]:
    """A chunk of due steps: read in one query, re-checked against the EHR with one search per
    resource type (`look_ahead`), then each sent as `send_step` sends it, with its own
    reservation, provider call and record (exactly-once stays per step). Different patients'
    steps go out on up to `send_threads` threads, one patient's in order on one. One step that
    fails leaves the others to go: it is logged and stays queued or sending, and the sweeper
    queues it again. The outbox rows the chunk queued go to `write_back` in one call at the end."""
    steps = _snapshots(rt, step_ids)
    ahead = look_ahead(rt, [step.enrollment for step in steps.values()])
    held = _HeldWritebacks(rt.enqueue)
    chunk = replace(rt, enqueue=held)
    order = list(dict.fromkeys(step_ids))  # each once: a repeat would find it taken
    by_patient: dict[str, list[int]] = {}
    for step_id in order:
        step = steps.get(step_id)
        by_patient.setdefault(step.enrollment.patient if step else "", []).append(step_id)
    outcomes: dict[int, SendOutcome] = {}

    def one_patient(ids: list[int]) -> None:
        for step_id in ids:
            outcomes[step_id] = _send_one(chunk, step_id, steps.get(step_id), ahead)

    threads = min(rt.settings.send_threads, len(by_patient))
    if rt.engine.dialect.name == "sqlite":  # one writer at a time: threads would only wait
        threads = 1
    try:
        if threads <= 1:
            for ids in by_patient.values():
                one_patient(ids)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="send") as pool:
                list(pool.map(one_patient, by_patient.values()))
    finally:
        rt.enqueue.write_back(held.writebacks)
    return [outcomes[step_id] for step_id in order]


def _send_one(rt: Runtime, step_id: int, step: ScheduledStep | None,
              ahead: Ahead | None) -> SendOutcome:
    if step is None:
        return SendOutcome(step_id, "not-queued", "already taken, cancelled or re-planned")
    try:
        return _send(rt, step, ahead)
    except Exception as exc:  # one step must not stop the chunk
        log.exception("step %s not sent (%s); the sweeper queues it again", step_id,
                      type(exc).__name__)
        return SendOutcome(step_id, "error", type(exc).__name__)


def _send(rt: Runtime, step: ScheduledStep, ahead: Ahead | None) -> SendOutcome:
    """`send_step` from the snapshot on; `ahead` holds what a chunk's search found."""
    step_id = step.id
    with holding_reads(rt.sessions):  # one connection for the check and the reservation
        ready = check(rt, step, step.enrollment, ahead)
        reservation = None if isinstance(ready, Skip) else _reserve(rt, step, ready)
    if isinstance(ready, Skip):
        outcome = _finish(rt, step_id, ready.state, ready.reason, ready.retry_at,
                          from_state=StepState.QUEUED, counts=ready.counts)
        return replace(outcome, fresh=ready.fresh)
    if reservation is None:
        return SendOutcome(step_id, "not-queued", "taken by another worker")
    provider_id: str | None = None
    try:
        if reservation.unfinished is not None:
            attempt_id, provider_id = _reconcile(rt, step, ready, reservation.unfinished)
        else:
            assert reservation.attempt_id is not None
            attempt_id = reservation.attempt_id
    except TransientSendError as exc:
        return _finish(rt, step_id, StepState.SCHEDULED, f"retrying: {exc}",
                       due_at=rt.clock.now() + backoff(step.attempts + 1))
    if provider_id is not None:
        log.info("step %s was already at the provider (%s): recorded, not resent", step_id,
                 provider_id)
    else:
        try:
            provider_id = rt.channels[ready.channel].send(ready.message).provider_message_id
        except SendError as exc:
            return _failed(rt, step, attempt_id, ready, exc)
    writeback_ids, early = _sent(rt, step, attempt_id, ready, provider_id)
    # One task: the Communication's write-back writes its CommunicationRequest with it (one
    # Bundle, or one request each where the EHR takes no transactions). A task for the request
    # would only find it done; the sweeper still offers it if it is left pending.
    rt.enqueue.write_back(writeback_ids[:1])
    delivery_status.apply_taken(rt, provider_id, early)  # a callback that beat our record
    SENDS.labels(StepState.SENT).inc()
    log.info("step %s sent on %s (provider id %s)", step_id, ready.channel, provider_id)
    return SendOutcome(step_id, StepState.SENT, None, ready.channel, ready.to,
                       tuple(writeback_ids))

