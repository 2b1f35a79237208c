"""Tables: ingested changes, last seen versions, enrollments, scheduled steps, delivery attempts,
the write-back outbox and polling cursors."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from outreach.store.types import JsonDocument, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JsonDocument}  # noqa: RUF012


class StepState(enum.StrEnum):
    SCHEDULED = "scheduled"   # waiting in the database for its due time
    QUEUED = "queued"         # claimed by the sweeper, a send_step task is on its way
    SENDING = "sending"       # reserved by a worker; the provider is being called
    SENT = "sent"
    SKIPPED = "skipped"       # not sent on purpose; `reason` says why
    CANCELLED = "cancelled"   # the journey no longer applies (cancel_when, delete, replan)
    FAILED = "failed"         # gave up; `reason` says why


PENDING_STATES = (StepState.SCHEDULED, StepState.QUEUED)


class ResourceChangeRecord(Base):
    """Every resource version we were told about, once: duplicates hit the unique key."""

    __tablename__ = "resource_changes"
    __table_args__ = (UniqueConstraint("resource_type", "resource_id", "version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # processed | stale
    last_updated: Mapped[datetime | None]
    received_at: Mapped[datetime]


class ResourceVersion(Base):
    """The newest version of each resource we have processed, kept to diff the next one."""

    __tablename__ = "resource_versions"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(128))
    last_updated: Mapped[datetime | None]
    deleted: Mapped[bool] = mapped_column(default=False)
    resource: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]


class Enrollment(Base):
    """One journey running for one anchor resource (and so one patient). `cycle` separates
    repeated runs of a scheduled journey for the same resource (e.g. a birthday, by year)."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("journey", "resource_type", "resource_id", "cycle",
                         name="uq_enrollments_journey_resource_cycle"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    journey: Mapped[str] = mapped_column(String(64))
    journey_version: Mapped[str] = mapped_column(String(32))
    patient: Mapped[str] = mapped_column(String(128), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    cycle: Mapped[str] = mapped_column(String(32), default="", server_default="")
    anchor_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="active")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    steps: Mapped[list[ScheduledStep]] = relationship(back_populates="enrollment")

    @property
    def anchor_reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class ScheduledStep(Base):
    __tablename__ = "scheduled_steps"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id"),
        # Partial index: the sweeper's cost follows the due steps, not every step ever planned.
        Index(
            "ix_scheduled_steps_due", "due_at",
            postgresql_where=text("state = 'scheduled'"), sqlite_where=text("state = 'scheduled'"),
        ),
        Index(
            "ix_scheduled_steps_queued", "queued_at",
            postgresql_where=text("state = 'queued'"), sqlite_where=text("state = 'queued'"),
        ),
        Index(
            "ix_scheduled_steps_sending", "updated_at",
            postgresql_where=text("state = 'sending'"), sqlite_where=text("state = 'sending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=lambda: str(uuid.uuid4()))
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"))
    step_id: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default=StepState.SCHEDULED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(16))
    # Channels that failed permanently for this step; the next listed one is the fallback.
    excluded_channels: Mapped[str] = mapped_column(String(64), default="", server_default="")
    queued_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    enrollment: Mapped[Enrollment] = relationship(back_populates="steps")


class DeliveryAttempt(Base):
    """One row per try at the provider, written (as `reserved`) before the provider is called."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("scheduled_steps.id"), index=True)
    attempt: Mapped[int]
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(255), index=True)  # where it went
    # reserved (before the provider call) | sent | failed | unknown (the provider may or may
    # not have it: reconciled before any retry)
    state: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The provider's delivery status (queued, sent, delivered, undelivered, failed) from its
    # callbacks; it only ever moves forward.
    provider_status: Mapped[str | None] = mapped_column(String(16))
    provider_status_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    language: Mapped[str | None] = mapped_column(String(16))  # the template language used
    segments: Mapped[int | None]  # SMS segments the carrier bills (None: not SMS)
    variant: Mapped[str | None] = mapped_column(String(64))  # an experiment's template


class Writeback(Base):
    """The outbox of FHIR resources to create in the EHR; kept until the EHR has them."""

    __tablename__ = "writebacks"
    __table_args__ = (
        Index(
            "ix_writebacks_pending", "next_attempt_at",
            postgresql_where=text("state = 'pending'"), sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("scheduled_steps.id"), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    identifier: Mapped[str] = mapped_column(String(255), unique=True)  # system|value
    resource: Mapped[dict[str, Any]]
    # create: POST with If-None-Exist; upsert: conditional update PUT {type}?identifier=...
    operation: Mapped[str] = mapped_column(String(16), default="create", server_default="create")
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    server_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    # Set while a batched write-back task writes the row: another task given it leaves it alone
    # (the sweep's lease alone cannot say which task it was offered to).
    claimed_until: Mapped[datetime | None]


class PollCursor(Base):
    __tablename__ = "poll_cursors"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_updated: Mapped[datetime]
    polled_at: Mapped[datetime]


class ContactConsent(Base):
    """Opt-out state per channel and address (STOP / START, or set by staff)."""

    __tablename__ = "contact_consents"
    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(255))  # E.164 number or lower-cased email
    patient: Mapped[str | None] = mapped_column(String(128), index=True)
    opted_out: Mapped[bool]
    source: Mapped[str] = mapped_column(String(32))  # keyword, staff, import
    changed_at: Mapped[datetime]


class PatientPreference(Base):
    """What a patient chose on the preference page: applied at send time over what the EHR says
    (language, channel order, quiet hours) and on top of it (categories opted out of)."""

    __tablename__ = "patient_preferences"

    patient: Mapped[str] = mapped_column(String(128), primary_key=True)
    language: Mapped[str | None] = mapped_column(String(8))
    channel: Mapped[str | None] = mapped_column(String(16))
    quiet_from: Mapped[str | None] = mapped_column(String(5))  # "HH:MM", patient's local time
    quiet_to: Mapped[str | None] = mapped_column(String(5))
    categories_off: Mapped[str] = mapped_column(String(64), default="")  # comma-separated
    # when the patient can come, as channels.availability codes ("mo-fr@08:00-12:00")
    availability: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[datetime]


class InboundMessage(Base):
    """A patient's reply, recorded once per provider message id."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str] = mapped_column(String(64), unique=True)
    from_address: Mapped[str] = mapped_column(String(255))
    to_address: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    patient: Mapped[str | None] = mapped_column(String(128), index=True)
    in_reply_to_step: Mapped[int | None] = mapped_column(ForeignKey("scheduled_steps.id"))
    # stop start help confirm cancel reschedule score text empty (channels.inbound.Intent), or
    # offer: the answer to times offered (a number, YES/NO, when they can come; `rule` says which)
    intent: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(200))  # which rule read it that way
    language: Mapped[str | None] = mapped_column(String(16))  # of the phrase that matched
    outcome: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int | None]  # a survey answer, as the patient gave it
    score_min: Mapped[int | None]  # the survey's scale when it was answered
    score_max: Mapped[int | None]
    score_low: Mapped[bool | None]  # it opened service recovery


class StaffMessage(Base):
    """A message a member of staff wrote to a patient from the clinician view: recorded before
    it is sent (its uid is the provider's de-duplication key, so a resubmitted form sends once),
    then marked sent, failed or not sent (opted out, no number) with the reason."""

    __tablename__ = "staff_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)  # from the form: one per page view
    patient: Mapped[str] = mapped_column(String(128), index=True)
    about: Mapped[str | None] = mapped_column(String(128))  # the appointment it is about
    staff: Mapped[str] = mapped_column(String(128))  # fhirUser ("Practitioner/{id}") or "unknown"
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # sending | sent | failed | not-sent
    reason: Mapped[str | None] = mapped_column(String(200))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]


class WebhookSignature(Base):
    """A provider webhook's signature, accepted once and kept for good: a Twilio signature never
    expires, and a request's fields can be re-split under it. Kept apart from the reply it
    carried, so that deleting the reply does not make the request usable again."""

    __tablename__ = "webhook_signatures"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # of the signature header
    kind: Mapped[str] = mapped_column(String(16))  # inbound | status
    message_sid: Mapped[str] = mapped_column(String(64))  # the message it was accepted for
    received_at: Mapped[datetime]


class SubscriptionStatus(Base):
    """What we know of each EHR subscription: event count, last event and heartbeat, gaps."""

    __tablename__ = "subscription_status"

    subscription_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # rest-hook | topic
    topic: Mapped[str | None] = mapped_column(String(255))
    events_since_start: Mapped[int] = mapped_column(BigInteger, default=0)
    last_event_at: Mapped[datetime | None]
    last_heartbeat_at: Mapped[datetime | None]
    gap_detected_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime]


class CampaignRun(Base):
    """One run of a scheduled (cron) journey, so a run is never repeated for the same key."""

    __tablename__ = "campaign_runs"
    __table_args__ = (UniqueConstraint("journey", "run_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey: Mapped[str] = mapped_column(String(64))
    run_key: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    matched: Mapped[int] = mapped_column(Integer, default=0)
    enrolled: Mapped[int] = mapped_column(Integer, default=0)


class JourneyControl(Base):
    """Operator switches per journey: a paused journey keeps planning but sends nothing."""

    __tablename__ = "journey_controls"

    journey: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    changed_at: Mapped[datetime]
    changed_by: Mapped[str] = mapped_column(String(64))


class AuditEntry(Base):
    """Every write through the admin API: who, what, when, on what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any] | None]


class Backfill(Base):
    """A time freed by a cancellation, offered to waitlisted patients one wave at a time until one
    takes it, the list runs out, or the time is too near."""

    __tablename__ = "backfills"

    id: Mapped[int] = mapped_column(primary_key=True)
    journey: Mapped[str] = mapped_column(String(64))
    freed_by: Mapped[str] = mapped_column(String(128), unique=True)  # the cancelled Appointment
    option: Mapped[dict[str, Any]]  # the freed time as a SlotOption (start, end, slot, actors)
    # open: offering; filled: a patient took it; exhausted: nobody left to ask; gone: too near,
    # or the EHR gave the time to someone else
    state: Mapped[str] = mapped_column(String(16), default="open")
    next_at: Mapped[datetime] = mapped_column(index=True)  # when the sweep looks at it again
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    filled_by: Mapped[int | None]  # the SlotOffer that won


class SlotOffer(Base):
    """Times offered to one patient by SMS or on the offer page: options to move an appointment
    (reschedule), or one freed time for a waitlisted appointment (waitlist). The patient answers
    with a number, YES/NO, or on the page; the first answer that books ends it."""

    __tablename__ = "slot_offers"
    __table_args__ = (
        Index("ix_slot_offers_open_address", "address", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)  # names the offer in its link
    kind: Mapped[str] = mapped_column(String(16))  # reschedule | book | waitlist
    backfill_id: Mapped[int | None] = mapped_column(ForeignKey("backfills.id"), index=True)
    patient: Mapped[str] = mapped_column(String(128), index=True)
    appointment: Mapped[str] = mapped_column(String(128))  # the one moved, or booked
    appointment_version: Mapped[str | None] = mapped_column(String(64))
    original_start: Mapped[datetime | None]  # when the patient would have come otherwise
    address: Mapped[str] = mapped_column(String(255))  # the phone number the offer went to
    language: Mapped[str] = mapped_column(String(8))
    options: Mapped[dict[str, Any]]  # {"options": [SlotOption as JSON, ...]}
    # open | booked | declined | expired | taken (someone else) | changed | failed
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    chosen: Mapped[int | None]  # 1-based option number booked
    booked_start: Mapped[datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(200))


class EarlyStatus(Base):
    """A provider's delivery status that came before we recorded the send it is about (Twilio
    may call back before its API answer reaches us): kept, and applied once the send is."""

    __tablename__ = "early_statuses"

    provider_message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime]
