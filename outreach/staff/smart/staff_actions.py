"""What staff do from the clinician view: answer the patient (sent by SMS to the number they
write from unless opted out, recorded, written back as a Communication naming the Practitioner)
and mark a Task done (in our record and, through the outbox, in the EHR). Each is audited with
the staff member's id, never the message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from channels import OutboundMessage, SendError
from connector.polling import fhir_instant
from connector.writeback import SentMessage, build_communication
from outreach.core.ports import Runtime
from outreach.staff.admin import audit
from outreach.staff.smart.session import SmartSession
from outreach.staff.smart.timeline import OPEN_TASK_STATUSES, STAFF_PREFIX
from outreach.store.consent import opted_out
from outreach.store.db import transaction
from outreach.store.models import (
    DeliveryAttempt,
    Enrollment,
    InboundMessage,
    ScheduledStep,
    StaffMessage,
    Writeback,
)
from outreach.writeback import outbox

log = logging.getLogger(__name__)

MAX_REPLY = 1000  # characters: seven SMS segments at most, and an answer, not a letter
UID = re.compile(r"[A-Za-z0-9_\-]{16,64}")
UNKNOWN_STAFF = "unknown"


class BadAction(ValueError):
    """A form the page did not produce, or text that cannot be sent; shown to the user."""


# Why a reply was recorded but not sent (also the Communication's statusReason).
NOT_SENT = {"no-number": "no mobile number on record for this patient",
            "opted-out": "the patient has opted out of SMS",
            "no-sms": "SMS is not set up on this server"}
# What the page tells the member of staff; the page after an action is named by its key (a
# redirect carries the key, never the message or anything of the patient's).
NOTICES = {"sent": "Sent by SMS.", "duplicate": "This message was already recorded.",
           **{key: f"Recorded, not sent: {why}." for key, why in NOT_SENT.items()},
           "failed": "Recorded, but the SMS could not be sent; try again later.",
           "done": "Task marked done.", "already-done": "This task was already done."}

OK_NOTICES = frozenset({"sent", "duplicate", "done", "already-done"})


@dataclass(frozen=True)
class Outcome:
    state: str  # a key of NOTICES

    @property
    def message(self) -> str:
        return NOTICES[self.state]


def csrf_token(secret: str, session: SmartSession) -> str:
    """Bound to this session's token: a page of another session (or another site's form, the
    cookie being sent cross-site inside the EHR's frame) cannot produce it."""
    mac = hmac.new(secret.encode(), f"csrf|{session.access_token}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def csrf_ok(secret: str, session: SmartSession, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(secret, session).encode(),
                                               (given or "").encode())


def staff_of(session: SmartSession) -> str:
    return session.fhir_user or UNKNOWN_STAFF


def sender_note(session: SmartSession) -> str | None:
    """Why a reply from this session will not name its sender in the EHR, if it will not."""
    return _sender(session)[1]


def _sender(session: SmartSession) -> tuple[str | None, str | None]:
    """(Communication.sender, why there is none)."""
    user = session.fhir_user
    if user is None:
        return None, "the EHR did not say who is signed in, so the EHR's record names no sender"
    if not user.startswith("Practitioner/"):
        return None, (f"signed in as a {user.split('/')[0]}, not a Practitioner, so the EHR's "
                      "record names no sender")
    return user, None


def _sms_number(session: Session, patient: str) -> str | None:
    """The number the conversation is on: the patient's latest reply's, else the last one we
    texted them at."""
    replied = session.scalar(select(InboundMessage.from_address).where(
        InboundMessage.patient == patient).order_by(InboundMessage.received_at.desc()).limit(1))
    if replied:
        return replied
    return session.scalar(
        select(DeliveryAttempt.address)
        .join(ScheduledStep, ScheduledStep.id == DeliveryAttempt.step_id)
        .join(Enrollment, Enrollment.id == ScheduledStep.enrollment_id)
        .where(Enrollment.patient == patient, DeliveryAttempt.channel == "sms",
               DeliveryAttempt.state == "sent")
        .order_by(DeliveryAttempt.started_at.desc()).limit(1))


def _about(session: Session, patient: str, wanted: str | None) -> str:
    """The appointment the answer is about: the one asked for if it is this patient's, else
    their latest; the patient when there is none."""
    anchors = [f"{kind}/{ident}" for kind, ident in session.execute(
        select(Enrollment.resource_type, Enrollment.resource_id).where(
            Enrollment.patient == patient).order_by(Enrollment.created_at.desc()).limit(50))]
    if wanted in anchors:
        return str(wanted)
    return anchors[0] if anchors else patient


def _check_reply(uid: str, text: str) -> str:
    if not UID.fullmatch(uid or ""):
        raise BadAction("This form is out of date; reload the page and write again.")
    text = (text or "").strip()
    if not text:
        raise BadAction("Write a message first.")
    if len(text) > MAX_REPLY or "\x00" in text:
        raise BadAction(f"A message may be at most {MAX_REPLY} characters.")
    return text


def _record(rt: Runtime, session: SmartSession, message_id: int, uid: str, text: str,
            about: str, state: str, reason: str | None, provider_id: str | None) -> None:
    sender, no_sender = _sender(session)
    system, now = rt.settings.identifier_system, rt.clock.now()
    with transaction(rt.sessions) as db:
        db.execute(update(StaffMessage).where(StaffMessage.id == message_id).values(
            state=state, reason=reason[:200] if reason else None,
            provider_message_id=provider_id))
        row = outbox.queue(db, build_communication(SentMessage(
            identifier_system=system, identifier_value=f"{STAFF_PREFIX}{uid}",
            patient=session.patient, about=about, channel="sms", category="notification",
            sent=now, text=text, sender=sender,
            status="completed" if state == "sent" else "not-done", status_reason=reason)),
            system, f"{STAFF_PREFIX}{uid}", now, known_new=True)
        audit(db, rt, staff_of(session), "smart.reply", session.patient,
              {"state": state, "message": message_id, "sender": sender,
               "no_sender": no_sender})
    rt.enqueue.write_back([row.id])


def send_reply(rt: Runtime, session: SmartSession, uid: str, text: str,
               about: str | None = None) -> Outcome:
    """Answer the patient by SMS. `uid` comes with the form: the same form sent twice (a
    reload, a double click) records and sends once."""
    text = _check_reply(uid, text)
    now = rt.clock.now()
    with transaction(rt.sessions) as db:
        number = _sms_number(db, session.patient)
        unsent = "no-number" if number is None else \
            "opted-out" if opted_out(db, [("sms", number)]) else \
            "no-sms" if rt.channels.get("sms") is None else None
        reason = NOT_SENT[unsent] if unsent else None
        target = _about(db, session.patient, about)
        try:
            with db.begin_nested():
                message = StaffMessage(uid=uid, patient=session.patient, about=target,
                                       staff=staff_of(session)[:128], channel="sms",
                                       address=number, body=text,
                                       state="sending" if reason is None else "not-sent",
                                       reason=reason, created_at=now)
                db.add(message)
        except IntegrityError:
            return Outcome("duplicate")
        message_id = message.id
    if unsent is not None:
        _record(rt, session, message_id, uid, text, target, "not-sent", reason, None)
        log.info("staff reply %s to %s not sent (%s)", message_id, session.patient, unsent)
        return Outcome(unsent)
    assert number is not None
    try:
        receipt = rt.channels["sms"].send(OutboundMessage(key=f"{STAFF_PREFIX}{uid}", to=number,
                                                          text=text))
    except SendError as exc:
        _record(rt, session, message_id, uid, text, target, "failed", f"not sent: {exc}", None)
        log.warning("staff reply %s to %s failed (%s)", message_id, session.patient,
                    type(exc).__name__)
        return Outcome("failed")
    _record(rt, session, message_id, uid, text, target, "sent", None,
            receipt.provider_message_id)
    log.info("staff reply %s sent to %s", message_id, session.patient)
    return Outcome("sent")


def _task_row(db: Session, session: SmartSession, identifier: str) -> Writeback:
    row = db.scalars(select(Writeback).where(
        Writeback.identifier == identifier, Writeback.resource_type == "Task",
        Writeback.resource["for"]["reference"].as_string() == session.patient,
    ).with_for_update()).first()
    if row is None:  # another patient's, or made up: the same answer
        raise BadAction("No such task for this patient.")
    return row


def complete_task(rt: Runtime, session: SmartSession, identifier: str) -> Outcome:
    """Mark one of this patient's Tasks completed: our record now, the EHR's through the outbox
    (an update of the Task it has)."""
    if not identifier or len(identifier) > 255 or not identifier.isprintable():
        raise BadAction("No such task for this patient.")  # nothing to look up (NUL, …)
    now = rt.clock.now()
    with transaction(rt.sessions) as db:
        row = _task_row(db, session, identifier)
        resource: dict[str, Any] = row.resource
        if resource.get("status") not in OPEN_TASK_STATUSES:
            return Outcome("already-done")
        done = {**resource, "status": "completed", "lastModified": fhir_instant(now)}
        system, _, value = identifier.partition("|")
        row_id = outbox.put(db, done, system, value, now, operation="upsert")
        audit(db, rt, staff_of(session), "smart.task-done", f"Task/{value}"[:128],
              {"patient": session.patient})
    rt.enqueue.write_back([row_id])
    log.info("task %s marked done by %s", value, staff_of(session))
    return Outcome("done")
