"""What happened to each appointment in a period, from our own records only: its final status
(the newest version ingested, by push or poll), the journeys it was enrolled in, the messages
sent about it and the patient's replies. Nothing is asked of the EHR."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import (
    DeliveryAttempt,
    Enrollment,
    InboundMessage,
    ResourceVersion,
    ScheduledStep,
    StepState,
)
from rules.changes import parse_instant

FULFILLED = frozenset({"fulfilled", "arrived", "checked-in"})
_FAILED_STATUSES = frozenset({"undelivered", "failed"})
_DELIVERED_STATUSES = frozenset({"delivered", "read"})
_TRIED = ("sent", "failed")  # attempts that reached a provider's answer


@dataclass(frozen=True, slots=True)
class Message:
    journey: str
    step: str
    channel: str
    language: str | None
    sent_at: datetime
    delivered: bool | None  # None: no delivery report (email, or none yet)
    failed: bool
    error_code: str | None
    segments: int
    variant: str | None = None  # an experiment's template


@dataclass(frozen=True, slots=True)
class ReplyFact:
    journey: str
    step: str
    intent: str
    score: int | None


@dataclass
class AppointmentFacts:
    reference: str
    patient: str
    start: datetime
    status: str
    cancelled_by: str | None  # patient | clinic | unknown (cancelled only)
    location: str
    practitioner: str
    service_type: str
    journeys: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    replies: list[ReplyFact] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why planned steps were not sent

    @property
    def reached(self) -> bool:
        return any(not m.failed for m in self.messages)

    @property
    def language(self) -> str:
        first = min(self.messages, key=lambda m: m.sent_at, default=None)
        return (first.language if first else None) or "unknown"

    @property
    def channels(self) -> set[str]:
        return {m.channel for m in self.messages if not m.failed}

    def intents(self) -> set[str]:
        return {r.intent for r in self.replies}


def _actor(appointment: dict[str, Any], prefix: str) -> str:
    for participant in appointment.get("participant") or []:
        actor = (participant or {}).get("actor") or {}
        reference = str(actor.get("reference") or "")
        if reference.startswith(prefix):
            return str(actor.get("display") or reference)
    return "unknown"


def _service_type(appointment: dict[str, Any]) -> str:
    for concept in appointment.get("serviceType") or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("display") or coding.get("code"):
                return str(coding.get("display") or coding.get("code"))
        if (concept or {}).get("text"):
            return str(concept["text"])
    return "unknown"


def _cancelled_by(appointment: dict[str, Any]) -> str | None:
    if appointment.get("status") != "cancelled":
        return None
    reason = appointment.get("cancelationReason") or {}
    codes = {c.get("code") for c in reason.get("coding") or []}
    if "pat" in codes:
        return "patient"
    return "clinic" if codes else "unknown"


def _start(appointment: dict[str, Any]) -> datetime | None:
    try:
        return parse_instant(appointment["start"]) if appointment.get("start") else None
    except (ValueError, TypeError):
        return None


def load_appointments(session: Session, start: datetime, end: datetime) -> list[AppointmentFacts]:
    """Every enrolled appointment whose start is in [start, end), with its facts."""
    start_text = ResourceVersion.resource["start"].as_string()
    # The stored start is a FHIR instant with any offset: select a day wider on both sides as
    # text, then compare exactly as instants.
    rows = session.execute(
        select(Enrollment.id, Enrollment.journey, Enrollment.patient, ResourceVersion.resource_id,
               ResourceVersion.resource)
        .join(ResourceVersion, (ResourceVersion.resource_type == Enrollment.resource_type)
              & (ResourceVersion.resource_id == Enrollment.resource_id))
        .where(Enrollment.resource_type == "Appointment",
               start_text >= (start - timedelta(days=1)).date().isoformat(),
               start_text < (end + timedelta(days=1)).date().isoformat())
    ).all()
    found: dict[str, AppointmentFacts] = {}
    journey_of: dict[int, tuple[str, AppointmentFacts]] = {}
    for enrollment_id, journey, patient, resource_id, resource in rows:
        at = _start(resource or {})
        if resource is None or at is None or not start <= at < end:
            continue
        reference = f"Appointment/{resource_id}"
        facts = found.get(reference)
        if facts is None:
            facts = found[reference] = AppointmentFacts(
                reference, patient, at, str(resource.get("status") or "unknown"),
                _cancelled_by(resource), _actor(resource, "Location/"),
                _actor(resource, "Practitioner"), _service_type(resource))
        facts.journeys.add(journey)
        journey_of[enrollment_id] = (journey, facts)
    _add_steps(session, journey_of)
    return sorted(found.values(), key=lambda f: (f.start, f.reference))


def _chunks(ids: list[int], size: int = 5000) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _add_steps(session: Session, journey_of: dict[int, tuple[str, AppointmentFacts]]) -> None:
    step_of: dict[int, tuple[str, str, AppointmentFacts]] = {}
    for chunk in _chunks(list(journey_of)):
        for step_pk, enrollment_id, step_id, state, reason in session.execute(
                select(ScheduledStep.id, ScheduledStep.enrollment_id, ScheduledStep.step_id,
                       ScheduledStep.state, ScheduledStep.reason)
                .where(ScheduledStep.enrollment_id.in_(chunk))):
            journey, facts = journey_of[enrollment_id]
            step_of[step_pk] = (journey, step_id, facts)
            if state in (StepState.SKIPPED, StepState.FAILED):
                facts.skipped.append(_reason_kind(reason))
    last_attempt: dict[int, DeliveryAttempt] = {}
    replies: dict[int, list[InboundMessage]] = defaultdict(list)
    for chunk in _chunks(list(step_of)):
        for attempt in session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.step_id.in_(chunk), DeliveryAttempt.state.in_(_TRIED))):
            kept = last_attempt.get(attempt.step_id)
            if kept is None or attempt.attempt > kept.attempt:
                last_attempt[attempt.step_id] = attempt
        for reply in session.scalars(select(InboundMessage).where(
                InboundMessage.in_reply_to_step.in_(chunk))):
            assert reply.in_reply_to_step is not None
            replies[reply.in_reply_to_step].append(reply)
    for step_pk, attempt in last_attempt.items():
        journey, step_id, facts = step_of[step_pk]
        status = attempt.provider_status
        facts.messages.append(Message(
            journey, step_id, attempt.channel, attempt.language,
            attempt.finished_at or attempt.started_at,
            # Every sent attempt starts as "accepted": only a final report says yes or no.
            delivered=True if status in _DELIVERED_STATUSES
            else False if status in _FAILED_STATUSES else None,
            failed=attempt.state == "failed" or status in _FAILED_STATUSES,
            error_code=attempt.error_code,
            segments=attempt.segments or 0, variant=attempt.variant))
    for step_pk, found in replies.items():
        journey, step_id, facts = step_of[step_pk]
        facts.replies.extend(ReplyFact(journey, step_id, r.intent, r.score) for r in found)


_INSTANT = re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.]+(Z|[+-]\d\d:\d\d)?")


def _reason_kind(reason: str | None) -> str:
    """A skip or failure reason without its particulars, to group by (no addresses, no ids, no
    times)."""
    text = _INSTANT.sub("…", (reason or "unknown").strip())
    for cut in (" (", ": ", " — ", " among "):
        text = text.split(cut, 1)[0]
    return text[:80]


@dataclass(frozen=True, slots=True)
class SentFact:
    """One message sent in the period, whatever it was about (volumes and cost)."""

    day: str
    channel: str
    segments: int
    sent: bool  # the provider took it (it may still fail to deliver)
    failed: bool  # refused, undelivered or failed
    error_code: str | None


def load_messages(session: Session, start: datetime, end: datetime,
                  zone: ZoneInfo) -> list[SentFact]:
    """Every message tried in [start, end), by local day."""
    rows = session.execute(
        select(DeliveryAttempt.started_at, DeliveryAttempt.channel, DeliveryAttempt.segments,
               DeliveryAttempt.state, DeliveryAttempt.provider_status, DeliveryAttempt.error_code)
        .where(DeliveryAttempt.state.in_(_TRIED), DeliveryAttempt.started_at >= start,
               DeliveryAttempt.started_at < end))
    return [SentFact(at.astimezone(zone).date().isoformat(), channel, segments or 0,
                     state == "sent", state == "failed" or status in _FAILED_STATUSES, code)
            for at, channel, segments, state, status, code in rows]


@dataclass(frozen=True, slots=True)
class ScoreFact:
    journey: str
    step: str
    score: int
    scale: tuple[int, int] | None = None  # as asked (None: read from the journey as loaded)
    low: bool | None = None  # opened service recovery


def load_scores(session: Session, start: datetime, end: datetime) -> list[ScoreFact]:
    """Survey answers received in the period, with the journey and step they answered."""
    rows = session.execute(
        select(Enrollment.journey, ScheduledStep.step_id, InboundMessage.score,
               InboundMessage.score_min, InboundMessage.score_max, InboundMessage.score_low)
        .join(ScheduledStep, InboundMessage.in_reply_to_step == ScheduledStep.id)
        .join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id)
        .where(InboundMessage.score.is_not(None), InboundMessage.received_at >= start,
               InboundMessage.received_at < end))
    return [ScoreFact(journey, step, score,
                      (lowest, highest) if lowest is not None and highest is not None else None,
                      low)
            for journey, step, score, lowest, highest, low in rows if score is not None]


def load_encounters(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """The final status of each enrolled Encounter whose period ended in [start, end), counted
    by status."""
    end_text = ResourceVersion.resource[("period", "end")].as_string()
    rows = session.execute(
        select(ResourceVersion.resource_id, ResourceVersion.resource)
        .join(Enrollment, (ResourceVersion.resource_type == Enrollment.resource_type)
              & (ResourceVersion.resource_id == Enrollment.resource_id))
        .where(Enrollment.resource_type == "Encounter",
               end_text >= (start - timedelta(days=1)).date().isoformat(),
               end_text < (end + timedelta(days=1)).date().isoformat()))
    statuses: dict[str, str] = {}
    for resource_id, resource in rows:
        ended = _start({"start": ((resource or {}).get("period") or {}).get("end")})
        if resource is not None and ended is not None and start <= ended < end:
            statuses[resource_id] = str(resource.get("status") or "unknown")
    found: dict[str, int] = {}
    for status in statuses.values():
        found[status] = found.get(status, 0) + 1
    return dict(sorted(found.items()))
