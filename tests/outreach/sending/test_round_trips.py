"""What one message costs the EHR: the send-time re-check in one search (or none when the
version ingested is fresh), then the Communication and its CommunicationRequest in one
transaction Bundle where the EHR lists `transaction`, one request each otherwise. Counted by
the real FHIR server's own request log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, update

from connector.polling import fhir_instant
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep, StepState, Writeback
from outreach.worker import jobs
from outreach.writeback.communication_requests import _requests
from tests.conftest import RuntimeFactory
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def runtime_for(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
                clock: SimulatedClock) -> Any:
    def build(**overrides: Any) -> Runtime:
        return make_runtime(clock=clock, fhir_base_url=fhir.base_url, smtp_host="127.0.0.1",
                            smtp_port=smtp.port, smtp_from="reminders@hospital.example",
                            **overrides)
    return build


def _queue(rt: Runtime) -> CollectingEnqueuer:
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    return rt.enqueue


def _book(rt: Runtime) -> tuple[dict[str, Any], int]:
    """A booking ingested and its planned CommunicationRequests written (as the worker does
    right after planning); returns the appointment and its confirmation step, queued."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(email="ana@example.org"))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
    ingest(rt, appt, source="test")
    queue = _queue(rt)
    for row in queue.writebacks:
        assert jobs.write_back(rt, row) == "done"
    queue.writebacks.clear()
    (step_id,) = queue.steps
    queue.steps.clear()
    return appt, step_id


def _send_and_write_back(rt: Runtime, step_id: int) -> list[str]:
    outcome = jobs.send_step(rt, step_id)
    assert outcome.state == StepState.SENT, outcome
    drain(rt)  # the write-back tasks the send queued
    return [row for row in _rows(rt) if row != "done"]


def _rows(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return [row.state for row in session.scalars(select(Writeback))]


def _trips(fhir: FhirTestServer) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in fhir.requests() if r["path"] != "/metadata"]


def _written(rt: Runtime, appt: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    assert rt.ehr is not None
    about = {"reference": f"Appointment/{appt['id']}"}
    communications = [c for c in rt.ehr.search("Communication", {"_count": 50})
                      if about in c["about"]]
    requests = [r["status"] for r in rt.ehr.search("CommunicationRequest", {"_count": 50})
                if about in r["about"]]
    return communications, sorted(requests)


def test_a_message_costs_the_ehr_two_round_trips(
    runtime_for: Any, fhir: FhirTestServer, smtp: SmtpServer,
) -> None:
    rt = runtime_for()
    appt, step_id = _book(rt)
    fhir.clear_requests()

    assert _send_and_write_back(rt, step_id) == []

    assert _trips(fhir) == ["GET /Appointment", "POST /"]  # one search, one Bundle
    assert len(smtp.messages) == 1
    communications, requests = _written(rt, appt)
    assert len(communications) == 1
    assert requests == ["active", "active", "active", "completed"]


def test_an_ehr_without_transactions_gets_one_request_per_write(
    runtime_for: Any, fhir: FhirTestServer,
) -> None:
    fhir.features(without_transactions=True)
    rt = runtime_for()
    appt, step_id = _book(rt)
    fhir.clear_requests()

    assert _send_and_write_back(rt, step_id) == []

    request_path = "PUT /CommunicationRequest/"
    trips = _trips(fhir)
    assert trips[:2] == ["GET /Appointment", "POST /Communication"]
    assert len(trips) == 3 and trips[2].startswith(request_path)  # by the id planning learnt
    communications, requests = _written(rt, appt)
    assert len(communications) == 1 and requests[-1] == "completed"


def test_a_version_ingested_moments_ago_is_not_read_again(
    runtime_for: Any, fhir: FhirTestServer, clock: SimulatedClock, smtp: SmtpServer,
) -> None:
    rt = runtime_for(recheck_fresh_seconds=30)
    assert rt.ehr is not None
    _, fresh_step = _book(rt)
    fhir.clear_requests()
    assert _send_and_write_back(rt, fresh_step) == []
    # Only the Patient (with its Consents) was asked for: the Appointment was ingested just now.
    assert [t for t in _trips(fhir) if t.startswith("GET")] == ["GET /Patient"]

    # Past the window the EHR is asked again, and a cancellation we were not told of is seen.
    appt, stale_step = _book(rt)
    rt.ehr.update({**rt.ehr.read("Appointment", str(appt["id"])), "status": "cancelled"})
    clock.advance(timedelta(seconds=31))
    outcome = jobs.send_step(rt, stale_step)
    assert outcome.state == StepState.CANCELLED
    assert len(smtp.messages) == 1


def test_a_failed_bundle_is_retried_whole_and_writes_nothing_twice(
    runtime_for: Any, fhir: FhirTestServer, clock: SimulatedClock,
) -> None:
    rt = runtime_for()
    appt, step_id = _book(rt)
    outcome = jobs.send_step(rt, step_id)
    communication_row, request_row = outcome.writeback_ids
    _queue(rt).writebacks.clear()

    fhir.outage(503)
    assert jobs.write_back(rt, request_row) == "with-communication"  # left to its Communication
    assert jobs.write_back(rt, communication_row) == "retry"
    assert _rows(rt).count("pending") == 2  # neither is kept half-written
    fhir.outage(None)
    assert _written(rt, appt) == ([], ["active", "active", "active", "active"])

    with rt.sessions() as session:
        due = max(row.next_attempt_at for row in session.scalars(select(Writeback)))
    clock.set(due)
    assert set(jobs.sweep(rt).writeback_ids) == {communication_row, request_row}
    drain(rt)
    assert _rows(rt).count("done") == len(_rows(rt))
    # The answer lost after the EHR committed: the same Bundle again creates nothing new.
    with rt.sessions.begin() as session:
        for row in session.scalars(select(Writeback).where(
                Writeback.id.in_([communication_row, request_row]))):
            row.state = "pending"
    assert jobs.write_back(rt, communication_row) == "done"
    communications, requests = _written(rt, appt)
    assert len(communications) == 1
    assert requests == ["active", "active", "active", "completed"]
    with rt.sessions() as session:
        step = session.get_one(ScheduledStep, step_id)
    assert step.state == StepState.SENT and step.attempts == 1


def test_a_bundle_refused_by_an_ehr_that_lists_transactions_is_written_one_by_one(
    runtime_for: Any, fhir: FhirTestServer,
) -> None:
    rt = runtime_for()
    appt, step_id = _book(rt)  # the CapabilityStatement, read now, lists `transaction`
    fhir.features(without_transactions=True)  # ...which the EHR then refuses (400)
    fhir.clear_requests()

    assert _send_and_write_back(rt, step_id) == []  # written, not left to retry forever

    trips = _trips(fhir)
    assert trips[:3] == ["GET /Appointment", "POST /", "POST /Communication"]
    assert len(trips) == 4 and trips[3].startswith("PUT /CommunicationRequest/")
    communications, requests = _written(rt, appt)
    assert len(communications) == 1 and requests[-1] == "completed"


@dataclass
class _Postgres:
    """What the database was asked, as SQLAlchemy sent it: statements, and the transactions
    around them (each a BEGIN and a COMMIT or ROLLBACK more; autocommit reads have none)."""

    statements: int = 0
    transactions: int = 0
    checkouts: int = 0

    def statement(self, *_args: Any) -> None:
        self.statements += 1

    def checkout(self, *_args: Any) -> None:
        self.checkouts += 1

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.transactions += 1


def test_a_message_costs_postgres_at_most_9_statements_in_one_transaction(
    runtime_for: Any, smtp: SmtpServer,
) -> None:
    rt = runtime_for()
    _, step_id = _book(rt)
    asked = _Postgres()
    event.listen(rt.engine, "before_cursor_execute", asked.statement)
    event.listen(rt.engine, "begin", asked.begin)
    event.listen(rt.engine.pool, "checkout", asked.checkout)
    try:
        assert jobs.send_step(rt, step_id).state == StepState.SENT
        drain(rt)  # the write-back task the send queued
    finally:
        event.remove(rt.engine, "before_cursor_execute", asked.statement)
        event.remove(rt.engine, "begin", asked.begin)
        event.remove(rt.engine.pool, "checkout", asked.checkout)

    assert len(smtp.messages) == 1
    assert set(_rows(rt)) == {"done"}
    # The step's snapshot; the check's paused journey, preferences, opt-outs and recent sends in
    # one read; the reservation in one statement; the record (the attempt, the step, both
    # outbox rows, a status that came early) in one; the write-back task's row and its partner
    # read, and both marked done in one transaction. Before issue 15: 18 statements in 8
    # transactions, and a ping at each of the 8 connection checkouts.
    assert asked.statements <= 9, asked
    assert asked.transactions <= 1, asked
    # Connections taken from the pool: the snapshot; the check and the reservation on one; the
    # record; the write-back's reads; its transaction.
    assert asked.checkouts <= 5, asked


def test_the_completed_request_carries_the_due_time_the_step_stands_at(
    runtime_for: Any,
) -> None:
    """The record of a send is one statement on Postgres; the CommunicationRequest it refreshes
    is the one `build_communication_request` makes for the sent step, its due time read in that
    statement (a re-plan that read the step before its reservation may have moved it)."""
    rt = runtime_for()
    _, step_id = _book(rt)
    moved = NOW + timedelta(minutes=7, seconds=3, milliseconds=250)
    email = rt.channels["email"]
    send = email.send

    def send_after_a_replan(message: Any) -> Any:
        with rt.engine.begin() as connection:
            connection.execute(update(ScheduledStep).where(ScheduledStep.id == step_id)
                               .values(due_at=moved))
        return send(message)

    email.send = send_after_a_replan  # type: ignore[method-assign]
    try:
        outcome = jobs.send_step(rt, step_id)
    finally:
        email.send = send  # type: ignore[method-assign]
    assert outcome.state == StepState.SENT
    communication_row, request_row = outcome.writeback_ids
    with rt.sessions() as session:
        step = session.get_one(ScheduledStep, step_id)
        request = session.get_one(Writeback, request_row)
        communication = session.get_one(Writeback, communication_row)
        (expected, value), = _requests(rt.settings.identifier_system, rt.journeys,
                                       step.enrollment, [step], request.next_attempt_at)
    assert request.resource["occurrenceDateTime"] == fhir_instant(moved)
    assert request.resource == expected
    assert (request.identifier, request.operation, request.state, request.step_id) == (
        f"{rt.settings.identifier_system}|{value}", "upsert", "pending", None)
    assert communication.resource["resourceType"] == "Communication"
    assert (communication.operation, communication.step_id) == ("create", step_id)
    assert communication.resource["basedOn"][0]["identifier"]["value"] == value
