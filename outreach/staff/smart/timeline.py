"""One patient's outreach timeline, read from the store: steps, deliveries, replies, opt-outs,
staff Tasks, and the conversation (every message to and from the patient). Read-only."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store.models import (
    ContactConsent,
    DeliveryAttempt,
    Enrollment,
    InboundMessage,
    ScheduledStep,
    StepState,
    Writeback,
)
from rules import JourneySet

# A long-followed patient can have years of enrollments; the side panel shows the latest ones.
MAX_ENROLLMENTS = 50
MAX_REPLIES = 200
MAX_CONVERSATION = 50  # the newest messages; the EHR keeps them all as Communications
MAX_DONE_TASKS = 10
MAX_MESSAGE_SHOWN = 2000
OPEN_TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "ready",
                                "in-progress", "on-hold"})
UNLINKED = "unlinked"
_WAITING = {StepState.SCHEDULED: "scheduled", StepState.QUEUED: "sending",
            StepState.SENDING: "sending"}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline. `kind` is scheduled, sending, sent, failed, skipped, cancelled
    or reply; `at` is when it is due, was sent, received or given up."""

    kind: str
    at: datetime
    title: str
    journey: str | None = None
    channels: tuple[str, ...] = ()
    status: str | None = None
    detail: str | None = None
    text: str | None = None


@dataclass
class Group:
    """Everything about one appointment (or other anchor resource), newest first."""

    reference: str
    anchor_at: datetime | None = None
    journeys: set[str] = field(default_factory=set)
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True)
class ChannelConsent:
    channel: str
    address_hint: str
    opted_out: bool
    changed_at: datetime
    source: str


@dataclass(frozen=True)
class StaffTask:
    description: str
    priority: str
    status: str
    authored: str | None
    focus: str | None
    in_ehr: bool  # written back, or still waiting in the outbox
    identifier: str = ""  # "system|value", how the EHR's copy is found

    @property
    def done(self) -> bool:
        return self.status not in OPEN_TASK_STATUSES


@dataclass(frozen=True)
class Message:
    """One message of the conversation. `who` is patient, clinic (outreach we sent) or staff
    (a member of staff answering, `sender` naming them)."""

    at: datetime
    who: str
    text: str
    medium: str
    sender: str | None = None
    sent: bool = True  # False: recorded, not sent (`reason` says why)
    reason: str | None = None


@dataclass(frozen=True)
class Timeline:
    patient: str
    groups: list[Group]
    consents: list[ChannelConsent]
    tasks: list[StaffTask]
    done_tasks: list[StaffTask] = field(default_factory=list)
    conversation: list[Message] = field(default_factory=list)  # oldest first

    @property
    def opted_out(self) -> set[str]:
        """Channels the patient has opted out of (at some address): scheduled steps skip them."""
        return {c.channel for c in self.consents if c.opted_out}

    @property
    def empty(self) -> bool:
        return not (self.groups or self.consents or self.tasks or self.conversation)

    @property
    def appointments(self) -> list[str]:
        """The appointments shown, newest first."""
        return [g.reference for g in self.groups if g.reference.startswith("Appointment/")]

    def with_ehr_status(self, statuses: dict[str, str]) -> Timeline:
        """The Tasks as the EHR has them now (staff may have completed them there)."""
        tasks = [replace(t, status=statuses.get(t.identifier, t.status)) for t in self.tasks]
        return replace(self, tasks=[t for t in tasks if not t.done],
                       done_tasks=[t for t in tasks if t.done] + self.done_tasks)


def _hint(channel: str, address: str) -> str:
    """Enough of the address to tell two apart, not enough to be a contact detail."""
    if channel == "email" and "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}…@{domain}"
    return f"…{address[-4:]}"


def _listed_channels(journeys: JourneySet, enrollment: Enrollment, step: ScheduledStep
                     ) -> tuple[str, ...]:
    loaded = journeys.by_name(enrollment.journey)
    spec = loaded.step(step.step_id) if loaded else None
    if spec is None:  # the journey changed since: say what we know
        return (step.channel,) if step.channel else ()
    excluded = set(filter(None, step.excluded_channels.split(",")))
    return tuple(c for c in spec.channel if c not in excluded)


def _step_entry(journeys: JourneySet, enrollment: Enrollment, step: ScheduledStep,
                attempt: DeliveryAttempt | None) -> Entry:
    state = StepState(step.state)
    if state in _WAITING:
        return Entry(_WAITING[state], step.due_at, step.step_id, enrollment.journey,
                     _listed_channels(journeys, enrollment, step))
    if state == StepState.SENT:
        status = (attempt.provider_status or attempt.state) if attempt else "sent"
        error = f"provider error {attempt.error_code}" if attempt and attempt.error_code \
            and status in ("undelivered", "failed") else None
        return Entry("sent", step.sent_at or step.updated_at, step.step_id, enrollment.journey,
                     (step.channel,) if step.channel else (), status, error)
    detail = step.reason
    if state == StepState.FAILED and attempt is not None and attempt.error:
        detail = f"{detail}: {attempt.error}" if detail else attempt.error
    return Entry(state.value, step.updated_at, step.step_id, enrollment.journey,
                 (step.channel,) if step.channel else (), None, detail)


def _latest_attempts(session: Session, step_ids: list[int]) -> dict[int, DeliveryAttempt]:
    latest: dict[int, DeliveryAttempt] = {}
    if step_ids:
        for attempt in session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.step_id.in_(step_ids)).order_by(DeliveryAttempt.attempt)):
            latest[attempt.step_id] = attempt  # ordered by attempt: the last one wins
    return latest


def _groups(session: Session, journeys: JourneySet, patient: str
            ) -> tuple[dict[str, Group], dict[int, str]]:
    enrollments = session.scalars(
        select(Enrollment).where(Enrollment.patient == patient)
        .order_by(Enrollment.created_at.desc()).limit(MAX_ENROLLMENTS)).all()
    steps = session.scalars(select(ScheduledStep).where(
        ScheduledStep.enrollment_id.in_([e.id for e in enrollments]))).all()
    attempts = _latest_attempts(session, [s.id for s in steps])
    by_id = {e.id: e for e in enrollments}
    groups: dict[str, Group] = {}
    step_group: dict[int, str] = {}
    for enrollment in enrollments:
        group = groups.setdefault(enrollment.anchor_reference, Group(enrollment.anchor_reference))
        group.anchor_at = group.anchor_at or enrollment.anchor_at
        group.journeys.add(enrollment.journey)
    for step in steps:
        enrollment = by_id[step.enrollment_id]
        step_group[step.id] = enrollment.anchor_reference
        groups[enrollment.anchor_reference].entries.append(
            _step_entry(journeys, enrollment, step, attempts.get(step.id)))
    return groups, step_group


def _add_replies(session: Session, patient: str, groups: dict[str, Group],
                 step_group: dict[int, str]) -> None:
    for message in session.scalars(
            select(InboundMessage).where(InboundMessage.patient == patient)
            .order_by(InboundMessage.received_at.desc()).limit(MAX_REPLIES)):
        key = step_group.get(message.in_reply_to_step or -1, UNLINKED)
        group = groups.setdefault(key, Group(key))
        group.entries.append(Entry("reply", message.received_at, "Reply", status=message.intent,
                                   detail=message.outcome, text=message.body))


def _consents(session: Session, patient: str) -> list[ChannelConsent]:
    rows = session.scalars(select(ContactConsent).where(ContactConsent.patient == patient)
                           .order_by(ContactConsent.channel, ContactConsent.changed_at.desc()))
    return [ChannelConsent(r.channel, _hint(r.channel, r.address), r.opted_out, r.changed_at,
                           r.source) for r in rows]


def _task(row: Writeback) -> StaffTask:
    resource: dict[str, Any] = row.resource
    focus = (resource.get("focus") or {}).get("reference")
    return StaffTask(str(resource.get("description", "")), str(resource.get("priority", "routine")),
                     str(resource.get("status", "")), resource.get("authoredOn"), focus,
                     row.state == "done", row.identifier)


def _tasks(session: Session, patient: str) -> tuple[list[StaffTask], list[StaffTask]]:
    """(open, recently done) Tasks, as we last wrote them."""
    # The outbox holds the Tasks exactly as we wrote them; `for` is their only patient link.
    rows = session.scalars(select(Writeback).where(
        Writeback.resource_type == "Task",
        Writeback.resource["for"]["reference"].as_string() == patient,
    ).order_by(Writeback.created_at.desc()))
    tasks = [_task(row) for row in rows]
    return [t for t in tasks if not t.done], [t for t in tasks if t.done][:MAX_DONE_TASKS]


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _first(resource: dict[str, Any], name: str) -> dict[str, Any]:
    items = resource.get(name)
    first = items[0] if isinstance(items, list) and items else None
    return first if isinstance(first, dict) else {}


def _message(resource: dict[str, Any], patient: str) -> Message | None:
    text = _first(resource, "payload").get("contentString")
    at = _instant(resource.get("sent")) or _instant(resource.get("received"))
    medium = _first(resource, "medium").get("text")
    if not isinstance(text, str) or at is None or not isinstance(medium, str):
        return None  # not a message (a note of changed preferences)
    sender = (resource.get("sender") or {}).get("reference")
    if sender == patient:
        who = "patient"
    elif sender or str(_first(resource, "identifier").get("value", "")).startswith(
            STAFF_PREFIX):
        who = "staff"
    else:
        who = "clinic"
    reason = (resource.get("statusReason") or {}).get("text")
    return Message(at, who, text[:MAX_MESSAGE_SHOWN], medium, sender,
                   resource.get("status") != "not-done", reason)


STAFF_PREFIX = "staff-"  # the identifier value of a staff member's message


def _conversation(session: Session, patient: str) -> list[Message]:
    """Every message to and from the patient, as written back (so with the text sent)."""
    rows = session.scalars(select(Writeback.resource).where(
        Writeback.resource_type == "Communication",
        Writeback.resource["subject"]["reference"].as_string() == patient,
    ).order_by(Writeback.created_at.desc(), Writeback.id.desc()).limit(MAX_CONVERSATION))
    found = [m for m in (_message(r, patient) for r in rows) if m is not None]
    return sorted(reversed(found), key=lambda m: m.at)  # at the same instant: as recorded


def _group_order(group: Group) -> tuple[bool, float]:
    newest = max((e.at for e in group.entries), default=group.anchor_at)
    when = group.anchor_at or newest
    return (group.reference == UNLINKED, -(when.timestamp() if when else 0.0))


def load_timeline(session: Session, journeys: JourneySet, patient: str) -> Timeline:
    """Everything we know of `patient` ("Patient/{id}"), grouped by appointment, newest first."""
    groups, step_group = _groups(session, journeys, patient)
    _add_replies(session, patient, groups, step_group)
    for group in groups.values():
        group.entries.sort(key=lambda e: e.at, reverse=True)
    ordered = sorted(groups.values(), key=_group_order)
    open_tasks, done_tasks = _tasks(session, patient)
    return Timeline(patient, ordered, _consents(session, patient), open_tasks, done_tasks,
                    _conversation(session, patient))
