"""A patient's SMS reply: recorded once, opt-out honoured, confirm/cancel/score acted on, staff
given a Task when a human is needed, and the reply written back as a Communication."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from channels.inbound import Reply, classify
from channels.templates import TemplateError
from connector.errors import FhirError
from connector.replies import (
    InboundSms,
    StaffTask,
    SurveyAnswer,
    build_inbound_communication,
    build_questionnaire_response,
    build_task,
    cancelled_by_patient,
    confirmed_by_patient,
)
from outreach.access import answers, reschedule
from outreach.access.outcome import OfferReply
from outreach.access.texts import say
from outreach.core.ports import Runtime
from outreach.store import replays
from outreach.store.consent import opted_out
from outreach.store.db import transaction
from outreach.store.models import (
    DeliveryAttempt,
    Enrollment,
    InboundMessage,
    ScheduledStep,
    SlotOffer,
)
from outreach.writeback import outbox
from outreach.writeback.consent import record_choice
from rules.recipients import first_name, patient_timezone, preferred_language
from rules.schema import Reschedule, Survey

log = logging.getLogger(__name__)


@dataclass
class InboundResult:
    intent: str
    reply: str | None = None  # the text we answer with (TwiML), if any
    rule: str = ""  # why the reply was read as `intent`
    outcome: str = ""  # what it led to
    duplicate: bool = False
    writeback_ids: list[int] = field(default_factory=list)
    # The appointment as the reply left it in the EHR (cancelled by the patient): the caller hands
    # it to intake, which cancels the pending reminders.
    changed: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Context:
    """The outbound message this reply most likely answers: the latest SMS sent to the number,
    or the offer of times it answered (no step)."""

    step_id: int | None
    step_uid: str  # the identifier value of our outbound Communication
    replies: dict[str, str]
    patient: str
    about: str
    survey: Survey | None = None
    task_owner: str | None = None
    reschedule: Reschedule | None = None  # new times are offered (the step asks for it)


def _context(rt: Runtime, session: Session, address: str) -> _Context | None:
    row = session.execute(
        select(ScheduledStep, Enrollment)
        .join(DeliveryAttempt, DeliveryAttempt.step_id == ScheduledStep.id)
        .join(Enrollment, Enrollment.id == ScheduledStep.enrollment_id)
        .where(DeliveryAttempt.address == address, DeliveryAttempt.channel == "sms",
               DeliveryAttempt.state == "sent")
        .order_by(DeliveryAttempt.finished_at.desc()).limit(1)
    ).first()
    if row is None:
        return None
    step, enrollment = row
    journey = rt.journeys.by_name(enrollment.journey)
    spec = journey.step(step.step_id) if journey else None
    replies: dict[str, str] = dict(spec.replies or {}) if spec else {}
    offers_times = bool({"reschedule", "book"} & set(replies.values())) and journey is not None
    return _Context(step.id, step.uid, replies, enrollment.patient, enrollment.anchor_reference,
                    spec.survey if spec else None, journey.spec.task_owner if journey else None,
                    (journey.spec.reschedule or Reschedule()) if offers_times and journey
                    else None)


def _patient(rt: Runtime, ctx: _Context | None) -> dict[str, Any]:
    """The patient's record in the EHR (for their language and name), or {} when unknown."""
    if ctx is None or rt.ehr is None:
        return {}
    try:
        return rt.ehr.read("Patient", ctx.patient.split("/")[-1])
    except FhirError:
        return {}


def _change_appointment(rt: Runtime, ctx: _Context, action: str) -> dict[str, Any]:
    """Apply confirm / cancel-appointment in the EHR (If-Match on the version read); returns the
    appointment as updated."""
    if rt.ehr is None:
        raise FhirError("no EHR configured")
    rtype, _, rid = ctx.about.partition("/")
    current = rt.ehr.read(rtype, rid)
    version = (current.get("meta") or {}).get("versionId")
    changed = (confirmed_by_patient(current, ctx.patient) if action == "confirm"
               else cancelled_by_patient(current))
    return rt.ehr.update(changed, if_match=f'W/"{version}"' if version else None)


def _task(rt: Runtime, session: Session, now: datetime, key: str, description: str,
          ctx: _Context | None, reply_id: str, priority: str = "routine") -> int:
    system = rt.settings.identifier_system
    task = build_task(StaffTask(
        identifier_system=system, identifier_value=f"task-{key}", description=description,
        authored=now, priority=priority, patient=ctx.patient if ctx else None,
        focus=ctx.about if ctx else None, reply_identifier=reply_id,
        owner=ctx.task_owner if ctx else None))
    return outbox.queue(session, task, system, f"task-{key}", now).id


@dataclass
class _Handling:
    """What a reply leads to: the outcome recorded, our answer (a key into the answers), a staff
    Task, an opt-out or opt-in, and the appointment as a reply action changed it in the EHR."""

    outcome: str = ""
    answer: str | None = None
    task: str | None = None
    priority: str = "routine"
    opt_out: bool | None = None
    changed: dict[str, Any] | None = None
    text: str | None = None  # our answer as written (an offer of times), over `answer`
    # What the reply was read as when an offer of times, not the general reading, read it: the
    # intent recorded is then `offer` (never free text for staff), the rule says how.
    offer_rule: str | None = None


def _offered(offered: OfferReply) -> _Handling:
    return _Handling(offered.outcome, task=offered.task, changed=offered.changed,
                     text=offered.answer, offer_rule=offered.read_as)


def _appointment_action(rt: Runtime, reply: Reply, ctx: _Context,
                        address: str | None = None) -> _Handling:
    """Confirm or cancel in the EHR, or ask staff to cancel or find another time."""
    action = reply.action or reply.intent
    if action == "cancel":
        return _Handling("cancel requested", "cancel",
                         "Patient asked by SMS to cancel this appointment.")
    if action in ("reschedule", "book") and ctx.reschedule is not None and address is not None:
        patient = _patient(rt, ctx)
        offered = reschedule.offer_times(
            rt, patient=ctx.patient, appointment=ctx.about, address=address,
            language=preferred_language(patient) or reply.language,
            zone=patient_timezone(patient) or rt.settings.zone, spec=ctx.reschedule,
            kind="book" if action == "book" else "reschedule")
        return _offered(offered)
    if action == "reschedule":
        return _Handling("new time requested", "reschedule",
                         "Patient asked by SMS for another time for this appointment.")
    try:
        updated = _change_appointment(rt, ctx, action)
    except FhirError as exc:
        log.warning("reply action %s on %s failed: %s", action, ctx.about, exc.status)
        return _Handling(f"EHR update failed ({exc.status}); staff asked", None, (
            f"Patient replied by SMS to {action.replace('-', ' ')} this appointment; "
            "the automatic update failed, please apply it."))
    done = "confirmed" if action == "confirm" else "cancelled"
    return _Handling(f"{ctx.about} {done} in the EHR", action,
                     changed=updated if action == "cancel-appointment" else None)


def _score_columns(rt: Runtime, reply: Reply, ctx: _Context | None,
                   handling: _Handling) -> dict[str, Any]:
    """A survey answer as the report reads it later, with the scale it was asked on (the
    journey may change or go) and whether it opened service recovery."""
    if reply.intent != "score" or reply.score is None:
        return {}
    survey = ctx.survey if ctx else None
    low, high = (survey.min, survey.max) if survey else (0, 10)
    return {"score": reply.score, "score_min": low, "score_max": high,
            "score_low": handling.task is not None}


def _score(rt: Runtime, reply: Reply, survey: Survey | None) -> _Handling:
    assert reply.score is not None
    handling = _Handling(f"score {reply.score}", "score")
    if reply.score <= (survey.low_at_most if survey else rt.settings.low_score_threshold):
        description = (survey.recovery_task if survey and survey.recovery_task
                       else "Service recovery: please contact the patient.")
        handling.task = f"{description} (satisfaction {reply.score}/" \
                        f"{survey.max if survey else 10} by SMS)"
        handling.priority = "urgent"
    return handling


def _handle(rt: Runtime, reply: Reply, ctx: _Context | None, offer: SlotOffer | None,
            body: str, address: str) -> _Handling:
    if offer is not None:
        offered = answers.handle(rt, offer, body, reply)
        if offered is not None:
            return _offered(offered)
    if reply.intent in ("stop", "start"):
        stop = reply.intent == "stop"
        return _Handling("opted out" if stop else "opted in", reply.intent, opt_out=stop)
    if reply.intent == "help":
        return _Handling("help sent", "help")
    if reply.intent == "empty":
        return _Handling("ignored: nothing to read")
    if reply.intent == "score" and ctx is not None:
        return _score(rt, reply, ctx.survey)
    if reply.intent in ("confirm", "cancel", "reschedule") and ctx is not None:
        return _appointment_action(rt, reply, ctx, address)
    if reply.rule.startswith("ambiguous"):
        return _Handling("staff task", task="Patient's SMS reply could mean more than one thing "
                         f"({reply.rule}); please read and respond.")
    return _Handling("staff task",
                     task="Patient sent a free-text reply by SMS; please read and respond.")


class UnstorableReply(ValueError):
    """A reply whose id, addresses or text cannot be recorded as given. The provider's webhook
    refuses these first (400); this keeps any other caller from a database error midway."""


def _check_input(message_id: str, from_: str, to: str, body: str) -> None:
    if not (0 < len(message_id) <= 64 and message_id.isprintable()):
        raise UnstorableReply("the message id must be 1 to 64 printable characters")
    if not all(0 < len(a) <= 255 and a.isprintable() for a in (from_, to)):
        raise UnstorableReply("each address must be 1 to 255 printable characters")
    if "\x00" in body:
        raise UnstorableReply("the text holds a NUL character")


def handle_sms(rt: Runtime, *, message_id: str, from_: str, to: str, body: str,
               provider: str = "twilio", signature_sha256: str | None = None) -> InboundResult:
    """Record a patient's SMS once, read it in context (the message it answers, whether the
    number is opted out), act on it, answer in the patient's language, and write it back.
    `signature_sha256` (of the webhook that carried it) is recorded with it: a concurrent
    request under the same signature is a duplicate, recording nothing.
    UnstorableReply, before anything is read or written, for input no table can hold."""
    _check_input(message_id, from_, to, body)
    now = rt.clock.now()
    with rt.sessions() as session:
        if session.scalar(select(InboundMessage.id).where(
                InboundMessage.provider_message_id == message_id)) is not None:
            return InboundResult("duplicate", duplicate=True)
        ctx = _context(rt, session, from_)
        stopped = bool(opted_out(session, [("sms", from_)]))
    offer = answers.open_offer(rt, from_)
    survey = ctx.survey if ctx else None
    reply = classify(body, ctx.replies if ctx else None,
                     (survey.min, survey.max) if survey else None, opted_out=stopped)
    handling = _handle(rt, reply, ctx, offer, body, from_)
    intent, rule = (("offer", handling.offer_rule) if handling.offer_rule is not None
                    else (reply.intent, reply.rule))
    if offer is not None and handling.offer_rule is not None and (
            ctx is None or ctx.about != offer.appointment):
        # A waitlist offer answers for its own appointment, not the last reminder's.
        ctx = _Context(None, f"offer-{offer.uid}", {}, offer.patient, offer.appointment)
    patient = ctx.patient if ctx else offer.patient if offer else None
    system = rt.settings.identifier_system
    with transaction(rt.sessions) as session:
        if signature_sha256 is not None and not replays.claim(
                session, signature_sha256, "inbound", message_id, now):
            return InboundResult("duplicate", duplicate=True)  # the same request, concurrently
        ids: list[int] = []
        if handling.opt_out is not None:
            changed, ids = record_choice(session, system, "sms", from_, handling.opt_out,
                                         source="keyword", now=now, patient=patient)
            if not changed:
                handling.answer = None  # one confirmation, not one per STOP
        try:
            with session.begin_nested():
                session.add(InboundMessage(
                    provider=provider, provider_message_id=message_id, from_address=from_,
                    to_address=to, body=body, received_at=now, patient=patient,
                    in_reply_to_step=ctx.step_id if ctx else None, intent=intent,
                    rule=rule[:200], language=reply.language,
                    outcome=handling.outcome or None,
                    **_score_columns(rt, reply, ctx, handling)))
        except IntegrityError:
            return InboundResult("duplicate", duplicate=True)  # a concurrent delivery won
        ids += _record(rt, session, now, message_id, body, ctx, reply, handling)
    rt.enqueue.write_back(ids)
    log.info("inbound %s: intent %s (%s), patient %s", message_id, intent, rule,
             patient or "unknown")
    return InboundResult(intent, _answer_text(rt, ctx, reply, handling), rule,
                         handling.outcome, writeback_ids=ids, changed=handling.changed)


def _record(rt: Runtime, session: Session, now: datetime, message_id: str, body: str,
            ctx: _Context | None, reply: Reply, handling: _Handling) -> list[int]:
    """The reply as a Communication (an empty one has nothing to write), its score, its Task."""
    ids = [] if reply.intent == "empty" else [
        _record_reply(rt, session, now, message_id, body, ctx)]
    if reply.intent == "score" and ctx is not None and reply.score is not None:
        ids.append(_record_score(rt, session, now, message_id, reply.score, ctx))
    if handling.task:
        ids.append(_task(rt, session, now, message_id, handling.task, ctx,
                         f"inbound-{message_id}", handling.priority))
    return ids


def _answer_text(rt: Runtime, ctx: _Context | None, reply: Reply,
                 handling: _Handling) -> str | None:
    """In the patient's preferred language, else the language they wrote in."""
    if handling.text is not None:
        return handling.text
    if handling.answer is None:
        return None
    patient = _patient(rt, ctx)
    language = preferred_language(patient) or reply.language
    if handling.priority == "urgent" and ctx is not None:
        recovery = _recovery_text(rt, ctx.survey, patient, language)
        if recovery is not None:
            return recovery
    return say(rt, language, handling.answer)


def _record_reply(rt: Runtime, session: Session, now: datetime, message_id: str, body: str,
                  ctx: _Context | None) -> int:
    system = rt.settings.identifier_system
    communication = build_inbound_communication(InboundSms(
        identifier_system=system, message_id=message_id, received=now, text=body,
        patient=ctx.patient if ctx else None, about=ctx.about if ctx else None,
        in_response_to=ctx.step_uid if ctx else None))
    return outbox.queue(session, communication, system, f"inbound-{message_id}", now).id


def _record_score(rt: Runtime, session: Session, now: datetime, message_id: str, score: int,
                  ctx: _Context) -> int:
    system = rt.settings.identifier_system
    low, high = (ctx.survey.min, ctx.survey.max) if ctx.survey else (0, 10)
    response = build_questionnaire_response(SurveyAnswer(
        identifier_system=system, message_id=message_id, score=score, low=low, high=high,
        authored=now, patient=ctx.patient, about=ctx.about))
    return outbox.queue(session, response, system, f"survey-{message_id}", now).id


def _recovery_text(rt: Runtime, survey: Survey | None, patient: dict[str, Any],
                   language: str | None) -> str | None:
    """The journey's service-recovery message, sent back at once as the reply."""
    if survey is None or survey.recovery_template is None:
        return None
    context = {"first_name": first_name(patient), "when": "", "place": None,
               "organization": rt.settings.organization_name,
               "callback_phone": rt.settings.callback_phone}
    try:
        return rt.templates.render(survey.recovery_template, "sms", context, language).text
    except TemplateError:
        log.warning("recovery template %s could not be rendered", survey.recovery_template)
        return None
