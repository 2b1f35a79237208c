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
from outreach.core.ports import Runtime
from outreach.store.consent import set_opt_out
from outreach.store.db import transaction
from outreach.store.models import DeliveryAttempt, Enrollment, InboundMessage, ScheduledStep
from outreach.writeback import outbox
from rules.recipients import first_name, preferred_language
from rules.schema import Survey

log = logging.getLogger(__name__)


@dataclass
class InboundResult:
    intent: str
    reply: str | None = None  # the text we answer with (TwiML), if any
    duplicate: bool = False
    writeback_ids: list[int] = field(default_factory=list)
    # The appointment as the reply left it in the EHR (cancelled by the patient): the caller hands
    # it to intake, which cancels the pending reminders.
    changed: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Context:
    """The outbound message this reply most likely answers: the latest SMS sent to the number."""

    step_id: int
    step_uid: str
    replies: dict[str, str]
    patient: str
    about: str
    survey: Survey | None = None
    task_owner: str | None = None


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
    return _Context(step.id, step.uid, dict(spec.replies or {}) if spec else {},
                    enrollment.patient, enrollment.anchor_reference,
                    spec.survey if spec else None, journey.spec.task_owner if journey else None)


def _texts(rt: Runtime) -> dict[str, str]:
    org = rt.settings.organization_name or "our clinic"
    call = f" For help call {rt.settings.callback_phone}." if rt.settings.callback_phone else ""
    return {
        "stop": f"You will receive no more text messages from {org}. Reply START to resubscribe.",
        "start": f"You will receive text messages from {org} again. Reply STOP to opt out.",
        "help": f"{org}: appointment messages.{call} Reply STOP to opt out.",
        "confirm": "Thank you, your appointment is confirmed.",
        "cancel": "Thank you. We have asked the clinic to cancel your appointment.",
        "cancel-appointment": "Your appointment is cancelled. Thank you for letting us know.",
        "score": "Thank you for your feedback.",
    }


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


@dataclass(frozen=True)
class _Action:
    """What an EHR-facing reply did: the outcome recorded, a staff Task if one is needed, and
    the appointment as changed in the EHR."""

    outcome: str = ""
    task: str | None = None
    changed: dict[str, Any] | None = None


def _act(rt: Runtime, reply: Reply, ctx: _Context | None) -> _Action:
    if reply.intent not in ("confirm", "cancel") or ctx is None:
        return _Action()
    action = reply.action or reply.intent
    if action == "cancel":
        return _Action("cancel requested", "Patient asked by SMS to cancel this appointment.")
    try:
        updated = _change_appointment(rt, ctx, action)
    except FhirError as exc:
        log.warning("reply action %s on %s failed: %s", action, ctx.about, exc.status)
        return _Action(f"EHR update failed ({exc.status}); staff asked", (
            f"Patient replied by SMS to {action.replace('-', ' ')} this appointment; "
            "the automatic update failed, please apply it."))
    done = "confirmed" if action == "confirm" else "cancelled"
    return _Action(f"{ctx.about} {done} in the EHR", None,
                   updated if action == "cancel-appointment" else None)


def handle_sms(rt: Runtime, *, message_id: str, from_: str, to: str, body: str,
               provider: str = "twilio") -> InboundResult:
    now = rt.clock.now()
    with rt.sessions() as session:
        if session.scalar(select(InboundMessage.id).where(
                InboundMessage.provider_message_id == message_id)) is not None:
            return InboundResult("duplicate", duplicate=True)
        ctx = _context(rt, session, from_)
    survey = ctx.survey if ctx else None
    reply = classify(body, ctx.replies if ctx else None,
                     (survey.min, survey.max) if survey else None)
    acted = _act(rt, reply, ctx)
    outcome, task_description = acted.outcome, acted.task
    texts = _texts(rt)
    answer: str | None = None
    priority = "routine"
    with transaction(rt.sessions) as session:
        if reply.intent in ("stop", "start"):
            changed = set_opt_out(session, "sms", from_, reply.intent == "stop",
                                  source="keyword", now=now, patient=ctx.patient if ctx else None)
            answer = texts[reply.intent] if changed else None  # one confirmation, not one per STOP
            outcome = "opted out" if reply.intent == "stop" else "opted in"
        elif reply.intent == "help":
            answer = texts["help"]
        elif reply.intent == "score":
            assert reply.score is not None and ctx is not None
            outcome = f"score {reply.score}"
            answer = texts["score"]
            low_at_most = survey.low_at_most if survey else rt.settings.low_score_threshold
            if reply.score <= low_at_most:
                high = survey.max if survey else 10
                task_description = (survey.recovery_task if survey and survey.recovery_task
                                    else "Service recovery: please contact the patient.")
                task_description += f" (satisfaction {reply.score}/{high} by SMS)"
                priority = "urgent"
                answer = _recovery_text(rt, ctx, survey) or answer
        elif reply.intent in ("confirm", "cancel") and ctx is not None:
            answer = texts[reply.action or reply.intent] if not task_description or \
                reply.action == "cancel" else None
        else:
            task_description = "Patient sent a free-text reply by SMS; please read and respond."
            outcome = "staff task"
        try:
            with session.begin_nested():
                session.add(InboundMessage(
                    provider=provider, provider_message_id=message_id, from_address=from_,
                    to_address=to, body=body, received_at=now,
                    patient=ctx.patient if ctx else None,
                    in_reply_to_step=ctx.step_id if ctx else None, intent=reply.intent,
                    outcome=outcome or None))
        except IntegrityError:
            return InboundResult("duplicate", duplicate=True)  # a concurrent delivery won
        ids = [_record_reply(rt, session, now, message_id, body, ctx)]
        if reply.intent == "score" and ctx is not None and reply.score is not None:
            ids.append(_record_score(rt, session, now, message_id, reply.score, ctx))
        if task_description:
            ids.append(_task(rt, session, now, message_id, task_description, ctx,
                             f"inbound-{message_id}", priority))
    rt.enqueue.write_back(ids)
    log.info("inbound %s: intent %s, patient %s", message_id, reply.intent,
             ctx.patient if ctx else "unknown")
    return InboundResult(reply.intent, answer, writeback_ids=ids, changed=acted.changed)


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


def _recovery_text(rt: Runtime, ctx: _Context, survey: Survey | None) -> str | None:
    """The journey's service-recovery message, sent back at once as the reply."""
    if survey is None or survey.recovery_template is None or rt.ehr is None:
        return None
    try:
        patient = rt.ehr.read("Patient", ctx.patient.removeprefix("Patient/"))
    except FhirError:
        patient = {}
    language = preferred_language(patient)
    context = {"first_name": first_name(patient), "when": "", "place": None,
               "organization": rt.settings.organization_name,
               "callback_phone": rt.settings.callback_phone}
    try:
        return rt.templates.render(survey.recovery_template, "sms", context, language).text
    except TemplateError:
        log.warning("recovery template %s could not be rendered", survey.recovery_template)
        return None
