"""Provider delivery-status callbacks: the delivery moves forward only, and so does its
Communication in the EHR."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connector.client import FhirClient
from connector.polling import fhir_instant
from connector.writeback import SentMessage, build_communication
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.db import transaction
from outreach.store.models import DeliveryAttempt, EarlyStatus, ScheduledStep, StepState, Writeback
from outreach.writeback import outbox
from outreach.writeback.delivery_status import apply_status
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
SYSTEM = "urn:fhir-outreach:step"
SID = "SM0123456789abcdef0123456789abcdef"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, clock: SimulatedClock) -> Runtime:
    return make_runtime(clock=clock, fhir_base_url=fhir.base_url)


@pytest.fixture
def communication_id(rt: Runtime, clock: SimulatedClock) -> int:
    """A booking confirmation sent by SMS a minute ago: the step, its delivery attempt (Twilio
    accepted it as SID) and its Communication in the outbox; returns the outbox row's id."""
    ingest(rt, appointment("Patient/p1", NOW + timedelta(days=5), aid="a1", version="1",
                           updated=NOW), source="test")
    with transaction(rt.sessions) as session:
        step = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "booked")).one()
        step.state, step.sent_at, step.channel = StepState.SENT, NOW, "sms"
        session.add(DeliveryAttempt(
            step_id=step.id, attempt=1, channel="sms", address="+15555550123", state="sent",
            provider_message_id=SID, provider_status="accepted", started_at=NOW, finished_at=NOW))
        communication = build_communication(SentMessage(
            identifier_system=SYSTEM, identifier_value=step.uid, patient="Patient/p1",
            about="Appointment/a1", channel="sms", category="notification", sent=NOW,
            text="Your appointment is booked."))
        row = outbox.queue(session, communication, SYSTEM, step.uid, NOW, step_id=step.id,
                           known_new=True)
    _enqueued(rt).writebacks.clear()
    clock.advance(timedelta(minutes=1))
    return row.id


def _enqueued(rt: Runtime) -> CollectingEnqueuer:
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    return rt.enqueue


def _attempt(rt: Runtime) -> DeliveryAttempt:
    with rt.sessions() as session:
        return session.scalars(select(DeliveryAttempt)).one()


def _row(rt: Runtime, writeback_id: int) -> Writeback:
    with rt.sessions() as session:
        return session.get_one(Writeback, writeback_id)


def _mark_written(rt: Runtime, writeback_id: int) -> None:
    with transaction(rt.sessions) as session:
        session.get_one(Writeback, writeback_id).state = "done"


def test_each_later_status_moves_the_delivery_forward(
    rt: Runtime, communication_id: int, clock: SimulatedClock
) -> None:
    assert apply_status(rt, SID, "sent") == "updated"
    assert _attempt(rt).provider_status == "sent"
    clock.advance(timedelta(seconds=5))
    assert apply_status(rt, SID, "Delivered") == "updated"  # case does not matter
    attempt = _attempt(rt)
    assert (attempt.provider_status, attempt.provider_status_at) == ("delivered", clock.now())


def test_a_late_or_repeated_status_never_moves_it_back(
    rt: Runtime, communication_id: int
) -> None:
    assert apply_status(rt, SID, "delivered") == "updated"
    assert apply_status(rt, SID, "sent") == "ignored"  # Twilio does not promise order
    assert apply_status(rt, SID, "queued") == "ignored"
    assert apply_status(rt, SID, "delivered") == "ignored"  # a duplicate
    assert apply_status(rt, SID, "undelivered", "30003") == "ignored"  # already final
    attempt = _attempt(rt)
    assert (attempt.provider_status, attempt.error_code) == ("delivered", None)


def test_a_message_we_have_not_recorded_is_kept_for_later(rt: Runtime,
                                                           communication_id: int) -> None:
    assert apply_status(rt, "SM-not-ours", "sent") == "kept"
    assert apply_status(rt, "SM-not-ours", "delivered") == "kept"
    assert apply_status(rt, "SM-not-ours", "queued") == "kept"  # older: the furthest stays
    assert _attempt(rt).provider_status == "accepted"
    with rt.sessions() as session:
        held = session.get_one(EarlyStatus, "SM-not-ours")
    assert held.status == "delivered"


def test_a_status_we_do_not_know_is_ignored(rt: Runtime, communication_id: int) -> None:
    assert apply_status(rt, SID, "exploded") == "ignored"
    assert _attempt(rt).provider_status == "accepted"
    assert _enqueued(rt).writebacks == []


def test_sent_leaves_the_communication_alone(rt: Runtime, communication_id: int) -> None:
    _mark_written(rt, communication_id)
    assert apply_status(rt, SID, "sent") == "updated"
    assert _row(rt, communication_id).state == "done"
    assert _enqueued(rt).writebacks == []


def test_delivered_queues_an_upsert_of_the_communication_with_received(
    rt: Runtime, communication_id: int, clock: SimulatedClock
) -> None:
    _mark_written(rt, communication_id)
    assert apply_status(rt, SID, "delivered") == "updated"
    row = _row(rt, communication_id)
    assert (row.state, row.operation) == ("pending", "upsert")
    assert row.resource["received"] == fhir_instant(clock.now())
    assert row.resource["status"] == "completed"
    assert _enqueued(rt).writebacks == [communication_id]


@pytest.mark.parametrize(("status", "code", "reason"), [
    ("undelivered", "30003", "undelivered (provider error 30003)"),
    ("failed", "30008", "failed (provider error 30008)"),
    ("failed", None, "failed"),
])
def test_not_delivered_marks_the_communication_not_done_with_the_error(
    rt: Runtime, communication_id: int, status: str, code: str | None, reason: str
) -> None:
    assert apply_status(rt, SID, status, code) == "updated"
    assert _attempt(rt).error_code == code
    row = _row(rt, communication_id)
    assert row.resource["status"] == "not-done"
    assert row.resource["statusReason"] == {"text": reason}
    assert "received" not in row.resource
    assert _enqueued(rt).writebacks == [communication_id]


def test_the_ehr_record_shows_the_delivery(rt: Runtime, communication_id: int) -> None:
    assert isinstance(rt.ehr, FhirClient)
    assert outbox.write_back(rt, communication_id) == "done"
    apply_status(rt, SID, "delivered")
    assert outbox.write_back(rt, communication_id) == "done"
    (written,) = rt.ehr.search("Communication", {"_count": 10})
    assert written["id"] == _row(rt, communication_id).server_id
    assert written["received"].startswith(fhir_instant(rt.clock.now())[:19])
